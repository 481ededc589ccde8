"""`product_sales`: units and revenue per product and currency.

Decision on cancellation: a PLACED order's lines count as ordered when it is placed; when it is
cancelled, the same lines are added to the cancelled columns rather than subtracted, so the table
keeps both what was asked for and what fell through. Net sales = ordered - cancelled. Confirming
or shipping changes nothing here. The model keeps each order's lines, summed per product
(`product_sales_orders`), to know what a cancellation takes back."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from psycopg.types.json import Jsonb
from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from typing import Any

from orders.v1 import events_pb2
from projector.models import ReadModel, Statement, Tables
from projector.models._money import amount, occurred
from projector.read_model import Base


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


def per_product(placed: events_pb2.OrderPlaced) -> list[dict[str, str]]:
    """One entry per (product, currency), so one upsert never touches a row twice."""
    units: dict[tuple[str, str], int] = defaultdict(int)
    revenue: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in placed.lines:
        key = (line.product_id, line.unit_price.currency_code)
        units[key] += line.quantity
        revenue[key] += amount(line.unit_price) * line.quantity
    return [
        {"product_id": p, "currency_code": c, "units": str(units[(p, c)]), "revenue": str(revenue[(p, c)])}
        for p, c in sorted(units)
    ]


def _upsert(into: str, kind: str, source: str) -> str:
    other = "cancelled" if kind == "ordered" else "ordered"
    return f"""INSERT INTO {into} (tenant_id, product_id, currency_code, units_{kind}, revenue_{kind},
                                   units_{other}, revenue_{other}, updated_at)
               SELECT %(tenant_id)s, l->>'product_id', l->>'currency_code', (l->>'units')::bigint,
                      (l->>'revenue')::numeric, 0, 0, %(at)s
               FROM {source}, jsonb_array_elements(lines) l
               ON CONFLICT (tenant_id, product_id, currency_code) DO UPDATE SET
                 units_{kind} = {into}.units_{kind} + EXCLUDED.units_{kind},
                 revenue_{kind} = {into}.revenue_{kind} + EXCLUDED.revenue_{kind},
                 updated_at = greatest({into}.updated_at, EXCLUDED.updated_at)"""


def order_placed(env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
    s, o = tables[SALES], tables[ORDERS]
    sql = f"""WITH o AS (INSERT INTO {o} (tenant_id, order_id, lines)
                         VALUES (%(tenant_id)s, %(order_id)s, %(lines)s) ON CONFLICT DO NOTHING RETURNING lines)
              {_upsert(s, "ordered", "o")}"""
    return [Statement(sql, dict(tenant_id=env.tenant_id, order_id=env.aggregate_id,
                                lines=Jsonb(per_product(env.order_placed)), at=occurred(env)))]


def order_cancelled(env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
    s, o = tables[SALES], tables[ORDERS]
    source = f"(SELECT lines FROM {o} WHERE tenant_id = %(tenant_id)s AND order_id = %(order_id)s) o"
    return [Statement(_upsert(s, "cancelled", source),
                      dict(tenant_id=env.tenant_id, order_id=env.aggregate_id, at=occurred(env)))]


MODEL = ReadModel(
    name=SALES,
    tables=(ProductSalesRow.__table__, ProductSalesOrderRow.__table__),  # type: ignore[arg-type]
    handlers={"order_placed": order_placed, "order_cancelled": order_cancelled},
)
