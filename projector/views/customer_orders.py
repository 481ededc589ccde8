"""`customer_orders`: the per-customer dashboard GetCustomerOrders returns: how many orders, and of
what value, are in each state now, and when the customer last ordered. One row per (tenant,
customer, currency).

Cancelled orders: an order counts once, in its current state; a cancellation moves it, with its
whole total, from the state it was cancelled in to `cancelled`, where it stays. `last_order_at`
is when the customer last placed an order; later changes to an order do not move it.

A state change names only the order, so the model keeps its own index of each order's customer,
total and state (`customer_order_states`) rather than reading another model's table: a rebuild of
this model then depends on nothing but the events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from orders.v1 import events_pb2
from projector.tables import Base
from projector.views._money import nanos, nanos_of, occurred
from projector.views.base import Apply, Conn, ReadModel, Tables, rows_by_order, rows_json, select_json

STATES = ("placed", "confirmed", "shipped", "cancelled")


class CustomerOrdersRow(Base):
    __tablename__ = "customer_orders"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    placed_count: Mapped[int] = mapped_column(BigInteger)
    placed_value: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    confirmed_count: Mapped[int] = mapped_column(BigInteger)
    confirmed_value: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    shipped_count: Mapped[int] = mapped_column(BigInteger)
    shipped_value: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    cancelled_count: Mapped[int] = mapped_column(BigInteger)
    cancelled_value: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    last_order_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CustomerOrderStateRow(Base):
    """This model's private index: which bucket each order is counted in."""

    __tablename__ = "customer_order_states"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    currency_code: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    state: Mapped[str] = mapped_column(String(16))


DASH = CustomerOrdersRow.__tablename__
INDEX = CustomerOrderStateRow.__tablename__
Key = tuple[str, str]
Bucket = tuple[str, str, str]  # tenant, customer, currency


@dataclass
class Changes:
    placed: dict[Key, tuple[str, str, int, int]] = field(default_factory=dict)  # customer, currency, nanos, micros
    moved: dict[Key, str] = field(default_factory=dict)  # the order's last state in the batch

    async def flush(self, conn: Conn, tables: Tables) -> None:
        d, i = tables[DASH], tables[INDEX]
        earlier = [k for k in self.moved if k not in self.placed]
        rows = await rows_by_order(conn, i, "customer_id, currency_code, total, state", earlier)
        known = {(r[0], r[1]): (r[2], r[3], nanos_of(r[4]), r[5]) for r in rows}
        # bucket -> [count and value (nanos) for each state in STATES..., last order (micros) or None]
        buckets: dict[Bucket, list[Any]] = {}
        index: list[tuple[str, str, str, str, int, str]] = []

        def move(bucket: Bucket, state: str, total: int, by: int) -> list[Any]:
            row = buckets.get(bucket)
            if row is None:
                row = buckets[bucket] = [*bucket, *[0] * (2 * len(STATES)), None]
            at = 3 + 2 * STATES.index(state)
            row[at] += by
            row[at + 1] += by * total
            return row

        for key, (customer, currency, total, when) in self.placed.items():
            state = self.moved.get(key, "placed")
            row = move((key[0], customer, currency), state, total, 1)
            row[-1] = when if row[-1] is None else max(row[-1], when)
            index.append((*key, customer, currency, total, state))
        for key in earlier:
            if key not in known:
                continue  # an order this model never saw placed: nothing to move
            customer, currency, total, old = known[key]
            new = self.moved[key]
            move((key[0], customer, currency), old, total, -1)
            move((key[0], customer, currency), new, total, 1)
            index.append((*key, customer, currency, total, new))
        if not index:
            return
        columns = [c for s in STATES for c in (f"{s}_count", f"{s}_value")]
        types = ["text", "text", "text", *["bigint", "nanos"] * len(STATES), "micros"]
        # One statement for both tables (every order moved is in the index and in a bucket): the
        # index's INSERT runs in WITH, the dashboard's upsert beside it, on rows of its own.
        await conn.execute(
            # NOT NULL is checked before ON CONFLICT: a bucket with no new order sends -infinity,
            # which greatest() then ignores.
            f"""WITH indexed AS (
                  INSERT INTO {i} (tenant_id, order_id, customer_id, currency_code, total, state)
                  {select_json("text", "text", "text", "text", "nanos", "text")}
                  ON CONFLICT (tenant_id, order_id) DO UPDATE SET state = EXCLUDED.state)
                INSERT INTO {d} (tenant_id, customer_id, currency_code, {", ".join(columns)}, last_order_at)
                SELECT {", ".join(f"u{n}" for n in range(len(types) - 1))}, coalesce(u{len(types) - 1}, '-infinity')
                FROM ({select_json(*types)}) AS u({", ".join(f"u{n}" for n in range(len(types)))})
                ON CONFLICT (tenant_id, customer_id, currency_code) DO UPDATE SET
                  {", ".join(f"{c} = {d}.{c} + EXCLUDED.{c}" for c in columns)},
                  last_order_at = greatest({d}.last_order_at, EXCLUDED.last_order_at)""",
            [rows_json(index), rows_json(buckets.values())],
        )


def order_placed(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    placed = env.order_placed
    changes.placed[(env.tenant_id, env.aggregate_id)] = (
        placed.customer_id, placed.total.currency_code, nanos(placed.total), occurred(env))


def _to(state: str) -> Apply:
    def move(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
        changes.moved[(env.tenant_id, env.aggregate_id)] = state

    return move


MODEL = ReadModel(
    name=DASH,
    tables=(CustomerOrdersRow.__table__, CustomerOrderStateRow.__table__),  # type: ignore[arg-type]
    changes=Changes,
    handlers={
        "order_placed": order_placed,
        "order_confirmed": _to("confirmed"),
        "order_cancelled": _to("cancelled"),
        "order_shipped": _to("shipped"),
    },
)


# --- what the query server reads ---------------------------------------------------------------


@dataclass(frozen=True)
class StateTotal:
    state: str  # as OrderState and order_summaries name it: PLACED, CONFIRMED, ...
    currency_code: str
    order_count: int
    total: Decimal


@dataclass(frozen=True)
class Dashboard:
    totals: list[StateTotal]  # states with orders only, in lifecycle order, then by currency
    last_order_at: dt.datetime | None  # None for a customer with no order


_READ = f"""SELECT currency_code, {", ".join(f"{s}_count, {s}_value" for s in STATES)}, last_order_at
            FROM {DASH} WHERE tenant_id = %s AND customer_id = %s ORDER BY currency_code"""


async def read(conn: Conn, tenant_id: str, customer_id: str) -> Dashboard:
    """One customer's dashboard, from this model's table alone."""
    rows = await (await conn.execute(_READ, (tenant_id, customer_id))).fetchall()
    totals = [
        StateTotal(state.upper(), row[0], row[1 + 2 * n], row[2 + 2 * n])
        for n, state in enumerate(STATES)
        for row in rows
        if row[1 + 2 * n]
    ]
    return Dashboard(totals, max((row[-1] for row in rows), default=None))
