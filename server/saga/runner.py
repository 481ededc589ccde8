"""The saga process: reads the event stream through its own durable consumer, keeps each order's
saga in PostgreSQL, sends each step to CommandService, and wakes up for deadlines and resends.

- A batch of events is applied in one transaction with the consumer's checkpoint: sagas started
  (OrderPlaced) and moved on by their steps' events, each write guarded by the saga's version. The
  messages are acked after the commit; the steps the batch made pending are sent after that.
- A step's answer moves the saga only when it is a refusal or a version conflict (in a
  transaction of its own); success is learnt from the step's event, which carries its request id.
- Every saga with a pending step has a retry time, and every forward saga a deadline; `wake_at`,
  the earlier of the two, is indexed. Each saga process waits for the earliest one and is told of
  earlier ones by NOTIFY, so a deadline fires on time with no scan of the table and survives any
  process: a step whose sender died is sent again by whichever process wakes first (same request
  id, so it still has one effect).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from orders.v1 import events_pb2
from server import telemetry
from server.config import Settings
from server.platform import messaging, process, tls, upcasting, wire
from server.saga import DURABLE, metrics, model, store
from server.saga.commands import Commands, Conflict, Done, Refused, TokenFile, Unknown, channel
from server.saga.model import Cause, Saga
from server.saga.store import LostRace, Stored

log = logging.getLogger(__name__)

FETCH_BATCH = 200
ACK_WAIT_SECONDS = 30.0
WAKE_BATCH = 100
LOST_RACE_RETRIES = 10
# A pending step is sent again after these many seconds (then doubling, at most RESEND_MAX) unless
# its event has arrived: a process that died after sending leaves nothing waiting for long.
RESEND_SECONDS = 3.0
RESEND_MAX_SECONDS = 10.0
VERSION_CACHE_SIZE = 100_000
# Steps in flight at once per process: a burst of orders must not exceed the command server's
# admission limit (ORDERS_MAX_CALLS_IN_PROGRESS), which answers RESOURCE_EXHAUSTED beyond it.
MAX_IN_FLIGHT = 32

T = TypeVar("T")

ORDER_PAYLOADS = {model.ORDER_CONFIRMED, model.ORDER_CANCELLED, "order_placed"}
STEP_PAYLOADS = {model.CREDIT_RESERVED, model.CREDIT_RELEASED, model.STOCK_RESERVED, model.STOCK_RELEASED}


def resend_delay(attempts: int) -> float:
    return min(RESEND_SECONDS * 2.0 ** min(attempts, 8), RESEND_MAX_SECONDS)


def consumer_config(since: dt.datetime) -> api.ConsumerConfig:
    """From the time the saga began to drive orders (migration 0009), whenever the consumer is made."""
    return api.ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        opt_start_time=since.astimezone(dt.UTC),
        ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=20_000,
        filter_subject=f"{messaging.SUBJECT_PREFIX}.>",
    )


class Versions:
    """The newest version this process has seen of each aggregate (from events and answers): a new
    step's expected_version. A wrong guess costs one conflict, which answers with the right one."""

    def __init__(self, size: int = VERSION_CACHE_SIZE) -> None:
        self._known: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._size = size

    def __call__(self, tenant_id: str, aggregate_type: str, aggregate_id: str) -> int:
        return self._known.get((tenant_id, aggregate_type, aggregate_id), 1)

    def saw(self, tenant_id: str, aggregate_type: str, aggregate_id: str, version: int) -> None:
        key = (tenant_id, aggregate_type, aggregate_id)
        if version > self._known.get(key, 0):
            self._known[key] = version
            self._known.move_to_end(key)
            if len(self._known) > self._size:
                self._known.popitem(last=False)


@dataclass(frozen=True)
class Event:
    """An event that concerns a saga, reduced to what its rules read."""

    key: tuple[str, str]  # tenant, order
    payload: str
    envelope: events_pb2.Envelope
    cause: Cause

    @property
    def quantity(self) -> int:
        if self.payload in (model.STOCK_RESERVED, model.STOCK_RELEASED):
            return int(getattr(self.envelope, self.payload).quantity)
        return 0


def concerning(msg: Msg) -> tuple[events_pb2.Envelope | None, Event | None]:
    """The message's envelope, upcast to its newest schema version (None: unreadable), and the saga
    event it is (None: none's)."""
    try:
        env = events_pb2.Envelope.FromString(msg.data)
    except (DecodeError, ValueError):  # the projector parks unreadable messages; the saga skips them
        return None, None
    try:
        upcasting.upcast(env)  # the rules read each event in its newest form
    except upcasting.UnknownSchemaVersionError as exc:
        # Written by a newer command side than this saga: readers are upgraded first (docs/events.md).
        log.error("event of an unknown schema version skipped", extra={
            "event_id": env.event_id, "aggregate_id": env.aggregate_id, "error": str(exc)})
        return env, None
    payload = env.WhichOneof("payload") or ""
    if payload in ORDER_PAYLOADS:
        order_id = env.aggregate_id
    elif payload in STEP_PAYLOADS:
        order_id = getattr(env, payload).order_id
    else:
        return env, None
    headers = msg.headers or {}
    trace = tuple(sorted((k, v) for k, v in headers.items() if k in ("traceparent", "tracestate")))
    return env, Event((env.tenant_id, order_id), payload, env, Cause(env.event_id, trace))


class Runner:
    """One saga process's work: batches of events, steps, and wake-ups."""

    def __init__(self, pool: AsyncConnectionPool, commands: Commands, deadline_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.commands = commands
        self.deadline_seconds = deadline_seconds
        self.since = float("inf")  # orders placed before it are not the saga's (read as consuming starts)
        self.clock = clock
        self.versions = Versions()
        self.sending: set[asyncio.Task[None]] = set()
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    # --- events ------------------------------------------------------------------------------

    async def apply(self, msgs: list[Msg], stream_seq: int) -> None:
        """Applies a batch's events to their sagas and the checkpoint in one transaction, then
        starts sending the steps that became pending."""
        events: list[Event] = []
        for msg in msgs:
            env, event = concerning(msg)
            if env is not None:
                self.versions.saw(env.tenant_id, env.aggregate_type, env.aggregate_id, env.aggregate_version)
            if event is not None:
                events.append(event)
        changed = await self._with_retries(lambda conn: self._apply(conn, events, stream_seq))
        for before, saga in changed:
            self._sent_if_new(before, saga)

    async def _apply(self, conn: psycopg.AsyncConnection, events: list[Event],
                     stream_seq: int) -> list[tuple[Saga | None, Saga]]:
        stored = await store.load_many(conn, {event.key for event in events})
        now = self.clock()
        sagas: dict[tuple[str, str], Saga] = {key: s.saga for key, s in stored.items()}
        for event in events:
            saga = sagas.get(event.key)
            if saga is None:
                if event.payload == "order_placed" and event.envelope.occur_time.ToMicroseconds() >= self.since * 1e6:
                    sagas[event.key] = self._start(event, now)
                continue
            changed = model.on_event(saga, event.payload, event.envelope.request_id, event.cause, event.quantity,
                                     now, self.versions)
            if changed is not None:
                sagas[event.key] = changed
        changes = [self._change(stored.get(key), saga, now) for key, saga in sagas.items()
                   if key not in stored or saga != stored[key].saga]
        await self._write(conn, changes)
        if stream_seq:
            await store.checkpoint(conn, DURABLE, stream_seq)
        return [(None if c.before is None else c.before.saga, c.saga) for c in changes]

    def _start(self, event: Event, now: float) -> Saga:
        placed = event.envelope.order_placed
        lines = tuple(model.Line(line.product_id, line.quantity) for line in placed.lines)
        saga = model.start(event.key[0], event.key[1], placed.customer_id, wire.money_to_domain(placed.total), lines,
                           event.envelope.correlation_id, event.cause, now, self.deadline_seconds, self.versions)
        return saga

    # --- answers -----------------------------------------------------------------------------

    def _sent_if_new(self, before: Saga | None, saga: Saga) -> None:
        """After a change committed: counts it, and sends the saga's pending step when the change
        made a new one (or changed its version)."""
        metrics.changed(before, saga, self.clock())
        if saga.pending is None or saga.state not in model.ACTIVE:
            return
        if before is not None and before.pending == saga.pending and before.state in model.ACTIVE:
            return
        self.send(saga)

    def send(self, saga: Saga) -> None:
        task = asyncio.create_task(self._send(saga))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, saga: Saga) -> None:
        """Sends the saga's pending step and applies what the answer says. Whatever goes wrong
        here is logged and left to the step's retry time: the row holds the step."""
        try:
            await self._send_step(saga)
        except (psycopg.Error, LostRace) as exc:
            log.warning("step answer not recorded; the step is sent again later",
                        extra={"order_id": saga.order_id, "error": repr(exc)})
        except Exception:
            log.exception("step failed; it is sent again later", extra={"order_id": saga.order_id})

    async def _send_step(self, saga: Saga) -> None:
        step = saga.pending
        assert step is not None
        async with self.in_flight:
            started = time.monotonic()
            outcome = await self.commands.send(saga, step)
        metrics.step_answered(step.kind.method, type(outcome).__name__, time.monotonic() - started)
        match outcome:
            case Done(version):
                self.versions.saw(saga.tenant_id, step.kind.aggregate_type, step.target, version)
            case Conflict(actual):
                self.versions.saw(saga.tenant_id, step.kind.aggregate_type, step.target, actual)
                await self.change(saga.tenant_id, saga.order_id,
                                  lambda s, now: model.on_conflict(s, step.request_id, actual, now, self.versions))
            case Refused(reason):
                await self.change(saga.tenant_id, saga.order_id,
                                  lambda s, now: model.on_refused(s, step.request_id, reason, now, self.versions))
            case Unknown(code):
                log.warning("step not answered; sent again later",
                            extra={"order_id": saga.order_id, "step": step.name, "code": code})

    async def change(self, tenant_id: str, order_id: str,
                     rule: Callable[[Saga, float], Saga | None]) -> Saga | None:
        """Applies `rule` to one saga in a transaction of its own, then sends its new step."""

        async def attempt(conn: psycopg.AsyncConnection) -> tuple[Saga, Saga] | None:
            stored = await store.load(conn, tenant_id, order_id)
            now = self.clock()
            changed = None if stored is None else rule(stored.saga, now)
            if stored is None or changed is None:
                return None
            await self._write(conn, [self._change(stored, changed, now)])
            return stored.saga, changed

        result = await self._with_retries(attempt)
        if result is None:
            return None
        self._sent_if_new(*result)
        return result[1]

    # --- wake-ups ----------------------------------------------------------------------------

    async def wake(self) -> None:
        """Deadlines that passed and steps due to be sent again, a batch at a time, each saga
        locked by one process (the others skip it)."""
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                due = await store.due(conn, WAKE_BATCH)
                now = self.clock()
                resend: list[Saga] = []
                fired: list[tuple[Saga, Saga]] = []
                changes: list[store.Change] = []
                for stored in due:
                    expired = model.on_deadline(stored.saga, now, self.versions)
                    if expired is not None:
                        changes.append(self._change(stored, expired, now))
                        resend.append(expired)
                        fired.append((stored.saga, expired))
                    elif stored.saga.pending is not None and stored.saga.state in model.ACTIVE:
                        changes.append(self._change(stored, stored.saga, now, attempts=stored.attempts + 1))
                        resend.append(stored.saga)
                    else:  # nothing left to wait for: written with no wake-up
                        changes.append(self._change(stored, stored.saga, now))
                await self._write(conn, changes)
            for before, expired in fired:
                metrics.deadline_fired()
                metrics.changed(before, expired, now)
            for saga in resend:
                if saga.pending is not None:
                    self.send(saga)
            if len(due) < WAKE_BATCH:
                return

    # --- writing -----------------------------------------------------------------------------

    def _change(self, before: Stored | None, saga: Saga, now: float, attempts: int | None = None) -> store.Change:
        """The write of `saga`: its step's send count (kept while the step is the same one) and
        when it is sent again."""
        if attempts is None:
            attempts = before.attempts if before is not None and before.saga.pending == saga.pending else 0
        return store.Change(before, saga, attempts, self._retry_at(saga, attempts, now))

    async def _write(self, conn: psycopg.AsyncConnection, changes: list[store.Change]) -> None:
        """Writes the changes (all of them or LostRace) and, at the commit, tells every saga
        process of the earliest wake-up they set."""
        await store.write(conn, changes)
        await self._notify(conn, [change.wake_at for change in changes])

    @staticmethod
    def _retry_at(saga: Saga, attempts: int, now: float) -> float | None:
        if saga.pending is None or saga.state not in model.ACTIVE:
            return None
        return now + resend_delay(attempts)

    @staticmethod
    async def _notify(conn: psycopg.AsyncConnection, wakes: list[float | None]) -> None:
        """Tells every saga process of the earliest wake-up this transaction set, at its commit."""
        known = [at for at in wakes if at is not None]
        if known:
            await store.notify_wake(conn, min(known))

    async def _with_retries(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        for attempt in range(LOST_RACE_RETRIES):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    return await work(conn)
            except LostRace:
                metrics.lost_race()
                if attempt == LOST_RACE_RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")



# --- the loops ----------------------------------------------------------------------------------


async def consume(js: JetStreamContext, runner: Runner, settings: Settings, stop: asyncio.Event) -> None:
    async with runner.pool.connection() as conn:
        runner.since = (await store.drives_since(conn, DURABLE)).timestamp()
    await messaging.ensure_stream(js, settings.stream_name, settings.stream_max_msgs, settings.stream_max_bytes,
                                   settings.stream_replicas)
    config = consumer_config(dt.datetime.fromtimestamp(runner.since, dt.UTC))
    sub = await js.pull_subscribe(config.filter_subject or "", durable=DURABLE, stream=settings.stream_name,
                                  config=config)
    try:
        while not stop.is_set():
            try:
                msgs = await messaging.next_batch(sub, FETCH_BATCH)
            except TimeoutError:
                continue
            except messaging.NatsError as exc:
                log.warning("fetch failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            msgs = [msg for msg in msgs if msg.reply]  # a status reply is no message
            if not msgs:
                continue
            try:
                await runner.apply(msgs, int(msgs[-1].metadata.sequence.stream))
            except (psycopg.OperationalError, psycopg.InterfaceError, LostRace) as exc:
                # Nothing committed: the messages come back after ACK_WAIT_SECONDS.
                log.warning("batch not applied; left for redelivery", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await msg.ack()
    finally:
        with contextlib.suppress(messaging.NatsError, TimeoutError):
            await sub.unsubscribe()


async def keep_waking(runner: Runner, url: str, stop: asyncio.Event) -> None:
    """Sleeps until the earliest wake-up any saga has (told of earlier ones by NOTIFY), then wakes
    the sagas that are due. A lost connection is made again."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {store.WAKE_CHANNEL}")
                await runner.wake()
                next_at = await store.next_wake(conn)
                while not stop.is_set():
                    timeout = 1.0 if next_at is None else min(max(next_at - time.time(), 0.0), 1.0)
                    async for notice in conn.notifies(timeout=timeout, stop_after=1):
                        at = float(notice.payload)
                        next_at = at if next_at is None else min(next_at, at)
                    if next_at is not None and time.time() >= next_at:
                        await runner.wake()
                        next_at = await store.next_wake(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning("wake-ups paused: database unreachable", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)


async def run(settings: Settings) -> None:
    """Composition root of the saga process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.auth and settings.saga_token_file is None:
        from server.config import ConfigError

        raise ConfigError(["ORDERS_SAGA_TOKEN_FILE is not set; the saga calls CommandService with its own service "
                           "token: a file holding a JWT with the scopes orders.write and orders.any_tenant "
                           "(`orders up` makes one)"])
    url = settings.role_database_url("saga")
    telemetry.serve_metrics(settings.metrics_addr)
    pool = AsyncConnectionPool(url, min_size=2, max_size=10, kwargs={"autocommit": True}, open=False, name="saga")
    await pool.open(wait=False)
    credentials = tls.probe_credentials(settings.tls) if settings.tls is not None else None
    grpc_channel = channel(settings.command_addr, credentials)
    runner = Runner(pool, Commands(grpc_channel, TokenFile(settings.saga_token_file)), settings.saga_deadline_seconds)
    nc = await messaging.connect(settings.require_nats_url(), "orders-saga", settings.nats_access)
    js = nc.jetstream()
    process.freeze_heap()
    waking = asyncio.create_task(keep_waking(runner, url, stop))
    counting = asyncio.create_task(metrics.count_states(pool, stop))
    try:
        await messaging.keep_consuming(lambda: consume(js, runner, settings, stop), DURABLE, stop,
                                       (messaging.NatsError, OSError, psycopg.OperationalError, PoolTimeout))
    finally:
        for task in (waking, counting, *runner.sending):
            task.cancel()
        await asyncio.gather(waking, counting, *runner.sending, return_exceptions=True)
        await messaging.close(nc)
        await grpc_channel.close()
        await pool.close()
