"""Fan-out of the projector's "view changed" notices to this replica's WatchOrders streams.

Core NATS is at-most-once, so a notice is only a wake-up: a woken watcher reads from PostgreSQL
the rows whose change_seq is past the last one it delivered (Get and Watch never disagree), and
every watcher re-checks on its heartbeat timer as well, so a lost notice costs at most one
heartbeat interval of delay, never an update. Per watcher the hub holds one event: memory does
not grow with the rate of changes or with how slowly a client reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge

from server import telemetry
from server.config import NatsAccess
from server.platform import messaging

log = logging.getLogger(__name__)

WATCHERS = Gauge("orders_watchers_active", "WatchOrders streams open on this query server")
NOTICES = Counter("orders_view_notices_total", "View-changed notices received from the projector")

Key = tuple[str, str, str]  # (tenant, "order" | "customer" | "all", id)


# Trace contexts a watcher keeps from the notices that woke it, so each push it sends continues
# the trace of the change it carries; bounded, like everything else per watcher.
MAX_TRACES_PER_WATCHER = 256


@dataclass(eq=False)
class Watcher:
    tenant_id: str
    order_id: str
    customer_id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    traces: dict[str, Context] = field(default_factory=dict)
    stream: bool = True  # False: a read waiting for its consistency token, not a WatchOrders stream
    # The versions the notices since the last read announced, per order: on a streaming replica
    # the read waits until the replica has replayed them (QueryService._until_replayed).
    versions: dict[str, int] = field(default_factory=dict)

    def noticed(self, order_id: str, ctx: Context | None, version: int = 0) -> None:
        if version and self.stream:
            if order_id not in self.versions and len(self.versions) >= MAX_TRACES_PER_WATCHER:
                self.versions.pop(next(iter(self.versions)))  # that change is found by a later read
            self.versions[order_id] = max(version, self.versions.get(order_id, 0))
        if ctx is not None and self.stream:  # a consistency-token waiter pushes nothing
            self.traces.pop(order_id, None)
            if len(self.traces) >= MAX_TRACES_PER_WATCHER:
                self.traces.pop(next(iter(self.traces)))
            self.traces[order_id] = ctx
        self.wake.set()

    def key(self) -> Key:
        if self.order_id:
            return (self.tenant_id, "order", self.order_id)
        if self.customer_id:
            return (self.tenant_id, "customer", self.customer_id)
        return (self.tenant_id, "all", "")


class StreamLimits:
    """Caps on the WatchOrders streams this server holds open: per connection (a client's
    channel, as `context.peer()` names it) and per tenant, 0 meaning none. A stream over a cap is
    refused before it starts; a stream that ends gives its slot back. A stream costs the server a
    task and a database read per change, so no one client or tenant may take all of them."""

    def __init__(self, per_connection: int, per_tenant: int) -> None:
        self.per_connection = per_connection
        self.per_tenant = per_tenant
        self._connections: dict[str, int] = defaultdict(int)
        self._tenants: dict[str, int] = defaultdict(int)

    def take(self, peer: str, tenant_id: str) -> tuple[str, int] | None:
        """Takes a slot, or names the limit that is full (per_connection or per_tenant) and its value."""
        if self.per_connection and self._connections[peer] >= self.per_connection:
            return "per_connection", self.per_connection
        if self.per_tenant and self._tenants[tenant_id] >= self.per_tenant:
            return "per_tenant", self.per_tenant
        self._connections[peer] += 1
        self._tenants[tenant_id] += 1
        return None

    def give_back(self, peer: str, tenant_id: str) -> None:
        for counts, key in ((self._connections, peer), (self._tenants, tenant_id)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]


class Hub:
    def __init__(self) -> None:
        self._watchers: dict[Key, set[Watcher]] = defaultdict(set)
        self.closing = False

    def add(self, watcher: Watcher) -> None:
        self._watchers[watcher.key()].add(watcher)
        if watcher.stream:
            WATCHERS.inc()

    def remove(self, watcher: Watcher) -> None:
        key = watcher.key()
        if watcher in self._watchers.get(key, ()):
            if watcher.stream:
                WATCHERS.dec()
        self._watchers[key].discard(watcher)
        if not self._watchers[key]:
            del self._watchers[key]

    def count(self) -> int:
        return sum(len(group) for group in self._watchers.values())

    def notify(self, tenant_id: str, order_id: str, customer_id: str, ctx: Context | None = None,
               version: int = 0) -> None:
        NOTICES.inc()
        for key in ((tenant_id, "order", order_id), (tenant_id, "customer", customer_id), (tenant_id, "all", "")):
            for watcher in self._watchers.get(key, ()):
                watcher.noticed(order_id, ctx, version)

    def close(self) -> None:
        """Wakes every watcher so it ends its stream with a status the client resumes from."""
        self.closing = True
        for group in self._watchers.values():
            for watcher in group:
                watcher.wake.set()

    async def on_message(self, msg: Msg) -> None:
        try:
            notice = json.loads(msg.data)
            ctx = telemetry.extract(msg.headers) if msg.headers else None
            self.notify(str(notice["t"]), str(notice["o"]), str(notice.get("c", "")), ctx, int(notice.get("v", 0)))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed view notice", extra={"subject": msg.subject})

    async def subscribe(self, nats_url: str, access: NatsAccess = NatsAccess()) -> Client:
        """Connects and subscribes, retrying until NATS answers; watchers poll meanwhile."""
        while True:
            try:
                nc = await messaging.connect(nats_url, "orders-query-server", access)
                await nc.subscribe(f"{messaging.NOTICE_PREFIX}.>", cb=self.on_message)
                return nc
            except (messaging.NatsError, OSError) as exc:
                log.warning("cannot subscribe to view notices yet", extra={"error": repr(exc)})
                await asyncio.sleep(1)
