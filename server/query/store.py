"""The query side's own reads: the applied versions consistency tokens wait for (views hold the rest)."""

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

