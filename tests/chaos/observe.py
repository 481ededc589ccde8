"""What a chaos run reads of the system once it settled, for the checker: the write side, the
stream and the read model; and what the roles hold (G8)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict

import nats
import psycopg

from orders.v1 import events_pb2
from server.config import libpq_url
from server.devstack.supervisor import LocalStack
from server.platform import privileges
from tests.chaos import checker
from tests.chaos.clients import TENANT
from tests.chaos.workload import total_text

# G8's bounds on what the roles hold after the run, against what they held under load before
# the first fault: descriptors and database connections back within 10%, with a little slack.
GROWTH, SLACK_FDS, SLACK_CONNECTIONS = 1.10, 8, 4


def converged(db_url: str) -> bool:
    """Every event published and every order's read model at its write-side version."""
    try:
        with psycopg.connect(db_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM events WHERE tenant_id = %(t)s AND published_at IS NULL), "
                "(SELECT count(*) FROM orders o LEFT JOIN order_summaries s USING (tenant_id, order_id) "
                " WHERE o.tenant_id = %(t)s AND s.version IS DISTINCT FROM o.version)", {"t": TENANT}).fetchone()
    except psycopg.OperationalError:
        return False
    return row is not None and row == (0, 0)


def system(db_url: str, nats_url: str, stream: str) -> checker.Observed:
    """The run's orders as the write side, the stream and the read model hold them, with each
    order's events and each request id's recorded answer."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        orders = {order_id: checker.Row(version, state, total_text(total)) for order_id, version, state, total in
                  conn.execute("SELECT order_id, version, state, total FROM orders WHERE tenant_id = %s", (TENANT,))}
        read_model = {order_id: checker.Row(version, state, total_text(total)) for order_id, version, state, total in
                      conn.execute("SELECT order_id, version, state, total FROM order_summaries WHERE tenant_id = %s",
                                   (TENANT,))}
        events: dict[str, list[checker.Event]] = defaultdict(list)
        for order_id, version, payload, published in conn.execute(
                "SELECT aggregate_id, aggregate_version, payload, published_at IS NOT NULL FROM events "
                "WHERE tenant_id = %s AND aggregate_type = 'order' ORDER BY aggregate_id, aggregate_version", (TENANT,)):
            envelope = events_pb2.Envelope.FromString(payload)
            events[order_id].append(checker.Event(version, envelope.request_id, published))
        responses = {request_id: bytes(response or b"") for request_id, response in
                     conn.execute("SELECT request_id, response FROM idempotency WHERE tenant_id = %s", (TENANT,))}
    return checker.Observed(orders, dict(events), responses, asyncio.run(_stream(nats_url, stream)), read_model)


async def _stream(nats_url: str, stream: str) -> dict[str, list[int]]:
    """Each order's versions in the stream, in stream-sequence order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        versions: dict[str, list[int]] = defaultdict(list)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            envelope = events_pb2.Envelope.FromString(msg.data or b"")
            if envelope.tenant_id == TENANT and envelope.aggregate_type == "order":
                versions[envelope.aggregate_id].append(envelope.aggregate_version)
        return dict(versions)
    finally:
        await nc.close()


def resources(stack: LocalStack) -> dict[str, int]:
    """Open descriptors of each role's processes, and the database's connections."""
    found: dict[str, int] = defaultdict(int)
    for child in stack.children:
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(OSError):
                found[f"fds {child.role}"] += len(os.listdir(f"/proc/{child.proc.pid}/fd"))
    with contextlib.suppress(psycopg.OperationalError):  # the database may be down: a fault's doing
        with psycopg.connect(libpq_url(stack.database_url), autocommit=True, connect_timeout=5) as conn:
            for user, count in conn.execute("SELECT usename, count(*) FROM pg_stat_activity "
                                            "WHERE backend_type = 'client backend' GROUP BY usename"):
                found[f"connections {user}"] = int(count)
    return dict(found)


def bounded(before: dict[str, int], after: dict[str, int], pools: dict[str, int]) -> list[str]:
    """G8: what each role holds after the run against what it held under load before the first
    fault. A connection pool that grew under the faults shrinks only after minutes idle, so a
    role's connections may reach its pool's size (`pools`, by database user), and its descriptors
    may grow by those connections' sockets; anything beyond is a leak."""
    findings = []
    for name, value in after.items():
        if name.startswith("connections "):
            limit = max(int(before.get(name, 0) * GROWTH) + SLACK_CONNECTIONS, pools.get(name.split()[1], 0))
        else:
            user = privileges.ROLE_OF_PROCESS[name.split()[1]]
            grown = max(0, after.get(f"connections {user}", 0) - before.get(f"connections {user}", 0))
            limit = int(before.get(name, 0) * GROWTH) + SLACK_FDS + grown
        if value > limit:
            findings.append(f"{name}: {value} after the run, {before.get(name, 0)} under load before it (limit {limit})")
    return findings
