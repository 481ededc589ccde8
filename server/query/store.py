"""The query side's own reads: the applied versions consistency tokens and watchers on a replica wait
for (views hold the rest)."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

Connection = psycopg.AsyncConnection[TupleRow]


async def applied_version(conn: Connection, tenant_id: str, aggregate_type: str, aggregate_id: str) -> int:
    cur = await conn.execute(
        "SELECT version FROM applied_versions WHERE tenant_id = %s AND aggregate_type = %s AND aggregate_id = %s",
        (tenant_id, aggregate_type, aggregate_id),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])



async def in_recovery(conn: Connection) -> bool:
    """Whether this connection reads a standby (a streaming replica) rather than a primary."""
    cur = await conn.execute("SELECT pg_is_in_recovery()")
    row = await cur.fetchone()
    return bool(row and row[0])


async def orders_behind(conn: Connection, tenant_id: str, wanted: dict[str, int]) -> dict[str, int]:
    """Of `wanted` (order id -> version), the orders whose applied version here is still lower."""
    cur = await conn.execute(
        "SELECT aggregate_id, version FROM applied_versions"
        " WHERE tenant_id = %s AND aggregate_type = 'order' AND aggregate_id = ANY(%s)",
        (tenant_id, list(wanted)),
    )
    have = {str(order_id): int(version) for order_id, version in await cur.fetchall()}
    return {order_id: version for order_id, version in wanted.items() if have.get(order_id, 0) < version}
