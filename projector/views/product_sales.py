"""`product_sales`: units and revenue per product and currency, as GetProductSales returns them.

Decision on cancellation: an order's lines count as ordered when it is placed; when it is
cancelled (from PLACED or CONFIRMED alike), the same lines are added to the cancelled columns
rather than subtracted, so the table keeps both what was asked for and what fell through.
Confirming or shipping changes nothing here. GetProductSales answers net sales: units and
revenue ordered minus cancelled, listing every product ever ordered (zero when every order of
it was cancelled). The model keeps each order's lines, summed per product
(`product_sales_orders`), to know what a cancellation takes back."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from orders.v1 import events_pb2
from projector.tables import Base
from projector.views._money import nanos, nanos_of, nanos_text, occurred
from projector.views.base import Conn, ReadModel, Tables, rows_by_order, rows_json, select_json


class ProductSalesRow(Base):
    __tablename__ = "product_sales"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    units_ordered: Mapped[int] = mapped_column(BigInteger)
    revenue_ordered: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    units_cancelled: Mapped[int] = mapped_column(BigInteger)
    revenue_cancelled: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ProductSalesOrderRow(Base):
    """This model's private index: each order's lines summed per (product, currency)."""

    __tablename__ = "product_sales_orders"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


SALES = ProductSalesRow.__tablename__
ORDERS = ProductSalesOrderRow.__tablename__
Key = tuple[str, str]


Line = tuple[str, str, int, int]  # product, currency, units, revenue in nanos


def sums(placed: events_pb2.OrderPlaced) -> list[Line]:
    """One entry per (product, currency): what the order adds to each product_sales row."""
    totals: dict[tuple[str, str], list[int]] = {}  # units, revenue in nanos
    # Revenue is the amount the command side recorded for each line (schema version 2; upcast for
    # version 1 events): a line without its amount is a malformed event, never zero revenue.
    for line, amount in zip(placed.lines, placed.line_totals, strict=True):
        row = totals.setdefault((line.product_id, line.unit_price.currency_code), [0, 0])
        row[0] += line.quantity
        row[1] += nanos(amount)
    return [(p, c, units, revenue) for (p, c), (units, revenue) in sorted(totals.items())]


def stored(lines: list[Line]) -> list[dict[str, str]]:
    """The lines as product_sales_orders keeps them (JSON, amounts as exact decimal strings)."""
    return [{"product_id": p, "currency_code": c, "units": str(units), "revenue": nanos_text(revenue)}
            for p, c, units, revenue in lines]


def loaded(rows: list[dict[str, str]]) -> list[Line]:
    """Lines read back from product_sales_orders."""
    return [(r["product_id"], r["currency_code"], int(r["units"]), nanos_of(Decimal(r["revenue"]))) for r in rows]


@dataclass
class Changes:
    placed: dict[Key, tuple[list[Line], int]] = field(default_factory=dict)  # lines, micros
    cancelled: dict[Key, int] = field(default_factory=dict)

    async def flush(self, conn: Conn, tables: Tables) -> None:
        s, o = tables[SALES], tables[ORDERS]
        lines = {k: v[0] for k, v in self.placed.items()}
        earlier = [k for k in self.cancelled if k not in lines]
        lines.update({(r[0], r[1]): loaded(r[2]) for r in await rows_by_order(conn, o, "lines", earlier)})
        # [tenant, product, currency, units ordered, revenue ordered, units cancelled, revenue cancelled, micros]
        delta: dict[tuple[str, str, str], list[Any]] = {}

        def add(key: Key, at: int, offset: int) -> None:
            for product, currency, units, revenue in lines.get(key, []):
                bucket = (key[0], product, currency)
                row = delta.get(bucket)
                if row is None:
                    row = delta[bucket] = [*bucket, 0, 0, 0, 0, at]
                row[offset] += units
                row[offset + 1] += revenue
                row[7] = max(row[7], at)

        for key, (_, at) in self.placed.items():
            add(key, at, 3)
        for key, at in self.cancelled.items():
            add(key, at, 5)
        if not (self.placed or delta):
            return
        # One statement for both tables: the orders' INSERT runs in WITH (on an empty array when
        # the batch placed none), the sales' upsert beside it.
        cols = ("units_ordered", "revenue_ordered", "units_cancelled", "revenue_cancelled")
        await conn.execute(
            f"""WITH stored AS (
                  INSERT INTO {o} (tenant_id, order_id, lines) {select_json("text", "text", "jsonb")}
                  ON CONFLICT DO NOTHING)
                INSERT INTO {s} (tenant_id, product_id, currency_code, {", ".join(cols)}, updated_at)
                {select_json("text", "text", "text", "bigint", "nanos", "bigint", "nanos", "micros")}
                ON CONFLICT (tenant_id, product_id, currency_code) DO UPDATE SET
                  {", ".join(f"{c} = {s}.{c} + EXCLUDED.{c}" for c in cols)},
                  updated_at = greatest({s}.updated_at, EXCLUDED.updated_at)""",
            [rows_json((*k, stored(v[0])) for k, v in self.placed.items()), rows_json(delta.values())],
        )


def order_placed(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.placed[(env.tenant_id, env.aggregate_id)] = (sums(env.order_placed), occurred(env))


def order_cancelled(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.cancelled[(env.tenant_id, env.aggregate_id)] = occurred(env)


MODEL = ReadModel(
    name=SALES,
    tables=(ProductSalesRow.__table__, ProductSalesOrderRow.__table__),  # type: ignore[arg-type]
    changes=Changes,
    handlers={"order_placed": order_placed, "order_cancelled": order_cancelled},
)


# --- what the query server reads ---------------------------------------------------------------


@dataclass(frozen=True)
class Sales:
    product_id: str
    currency_code: str
    units_sold: int  # ordered minus cancelled
    revenue: Decimal  # ordered minus cancelled, exact


_NET = f"""SELECT product_id, currency_code, units_ordered - units_cancelled, revenue_ordered - revenue_cancelled
           FROM {SALES} WHERE tenant_id = %s"""


async def read(conn: Conn, tenant_id: str, product_id: str) -> list[Sales]:
    """Net sales of one product (or, with an empty id, of every product) by product and currency."""
    where, params = (" AND product_id = %s", (tenant_id, product_id)) if product_id else ("", (tenant_id,))
    rows = await (await conn.execute(_NET + where + " ORDER BY product_id, currency_code", params)).fetchall()
    return [Sales(*row) for row in rows]
