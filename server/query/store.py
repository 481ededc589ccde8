"""The query side's own storage reads: connections and the projector's applied versions that
consistency tokens wait for. Each read model's query SQL lives with its table in projector/views."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

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


@dataclass(frozen=True)
class StateTotal:
    state: str
    currency_code: str
    order_count: int
    total: Decimal
    last_update: dt.datetime


async def customer_orders(conn: Connection, tenant_id: str, customer_id: str) -> list[StateTotal]:
    cur = await conn.execute(
        """SELECT state, currency_code, count(*), sum(total), max(updated_at) FROM order_summaries
           WHERE tenant_id = %s AND customer_id = %s GROUP BY state, currency_code ORDER BY state, currency_code""",
        (tenant_id, customer_id),
    )
    return [StateTotal(*row) for row in await cur.fetchall()]


@dataclass(frozen=True)
class Sales:
    product_id: str
    currency_code: str
    units_sold: int
    revenue: Decimal


async def product_sales(conn: Connection, tenant_id: str, product_id: str) -> list[Sales]:
    """Lines of orders that are not cancelled; unit prices are stored as exact units + nanos."""
    cur = await conn.execute(
        """SELECT l->>'product_id', l->>'currency_code', sum((l->>'quantity')::bigint),
                  sum((l->>'quantity')::numeric * ((l->>'units')::numeric + (l->>'nanos')::numeric / 1000000000))
           FROM order_summaries s CROSS JOIN LATERAL jsonb_array_elements(s.lines) AS l
           WHERE s.tenant_id = %(tenant_id)s AND s.state <> 'CANCELLED'
             AND (%(product_id)s = '' OR l->>'product_id' = %(product_id)s)
           GROUP BY 1, 2 ORDER BY 1, 2""",
        {"tenant_id": tenant_id, "product_id": product_id},
    )
    return [Sales(row[0], row[1], int(row[2]), row[3]) for row in await cur.fetchall()]
