"""The query side's storage: the SQL the query server runs on the read models, on pooled psycopg
connections (the hot path skips the ORM; projector/read_model.py's typed tables stay the schema).

GetCustomerOrders and GetProductSales still aggregate `order_summaries`: the projector already
maintains dedicated `customer_orders` and `product_sales` tables (projector/models), but the query
side does not read them yet; the functions `customer_orders` and `product_sales` are the only ones
to repoint when it does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow

Connection = psycopg.AsyncConnection[TupleRow]

SUMMARY_COLUMNS = "order_id, customer_id, state, currency_code, total, lines, version, updated_at, change_seq"


@dataclass(frozen=True)
class Summary:
    order_id: str
    customer_id: str
    state: str
    currency_code: str
    total: Decimal
    lines: list[dict[str, Any]]
    version: int
    updated_at: dt.datetime
    change_seq: int  # commit-ordered (see migration 0005): what watchers page and resume by


@dataclass(frozen=True)
class WatchFilter:
    """One order, one customer's orders, or (both empty) every order of the tenant."""

    order_id: str = ""
    customer_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"order_id": self.order_id, "customer_id": self.customer_id}


async def applied_version(conn: Connection, tenant_id: str, aggregate_type: str, aggregate_id: str) -> int:
    cur = await conn.execute(
        "SELECT version FROM applied_versions WHERE tenant_id = %s AND aggregate_type = %s AND aggregate_id = %s",
        (tenant_id, aggregate_type, aggregate_id),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def order_summary(conn: Connection, tenant_id: str, order_id: str) -> Summary | None:
    cur = await conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM order_summaries WHERE tenant_id = %s AND order_id = %s", (tenant_id, order_id)
    )
    row = await cur.fetchone()
    return None if row is None else Summary(*row)


async def list_orders(
    conn: Connection, tenant_id: str, customer_id: str, state: str, after_order_id: str, limit: int
) -> list[Summary]:
    """Orders by order id: a key that never changes, so a walk over pages meets each order once
    even while orders change under it."""
    where = ["tenant_id = %(tenant_id)s", "order_id > %(after)s"]
    if customer_id:
        where.append("customer_id = %(customer_id)s")
    if state:
        where.append("state = %(state)s")
    params = {"tenant_id": tenant_id, "after": after_order_id, "customer_id": customer_id, "state": state}
    return await _summaries(conn, where, "order_id", limit, params)


async def changes_since(conn: Connection, tenant_id: str, filter_: WatchFilter, after_seq: int, limit: int) -> list[Summary]:
    """Matching rows whose last change committed after change sequence `after_seq`, in order.
    A row holds only its latest state, so a reader that fell behind gets each order once, at
    its newest version: updates conflate in the table, not in memory."""
    where = ["tenant_id = %(tenant_id)s", "change_seq > %(after)s"]
    if filter_.order_id:
        where.append("order_id = %(order_id)s")
    if filter_.customer_id:
        where.append("customer_id = %(customer_id)s")
    return await _summaries(conn, where, "change_seq", limit, {"tenant_id": tenant_id, "after": after_seq, **filter_.as_dict()})


async def _summaries(conn: Connection, where: list[str], order_by: str, limit: int, params: dict[str, Any]) -> list[Summary]:
    """The first `limit` order_summaries rows matching every condition in `where`, by `order_by`."""
    cur = await conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM order_summaries WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT %(limit)s",
        {**params, "limit": limit},
    )
    return [Summary(*row) for row in await cur.fetchall()]


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
