"""`customer_orders`: the per-customer dashboard: how many orders, and of what value, are in each
state now, and when the customer last ordered. One row per (tenant, customer, currency).

A state change names only the order, so the model keeps its own index of each order's customer,
total and state (`customer_order_states`) rather than reading another model's table: a rebuild of
this model then depends on nothing but the events."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from orders.v1 import events_pb2
from projector.models import ReadModel, Statement, Tables
from projector.models._money import amount, occurred
from projector.read_model import Base

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
_ZEROES = ", ".join("0, 0" for _ in STATES[1:])


def order_placed(env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
    placed = env.order_placed
    d, i = tables[DASH], tables[INDEX]
    return [
        Statement(
            f"""WITH o AS (
                  INSERT INTO {i} (tenant_id, order_id, customer_id, currency_code, total, state)
                  VALUES (%(tenant_id)s, %(order_id)s, %(customer_id)s, %(currency)s, %(total)s, 'placed')
                  ON CONFLICT DO NOTHING RETURNING 1)
                INSERT INTO {d} (tenant_id, customer_id, currency_code, placed_count, placed_value,
                                 {", ".join(f"{s}_count, {s}_value" for s in STATES[1:])}, last_order_at)
                SELECT %(tenant_id)s, %(customer_id)s, %(currency)s, 1, %(total)s, {_ZEROES}, %(at)s FROM o
                ON CONFLICT (tenant_id, customer_id, currency_code) DO UPDATE SET
                  placed_count = {d}.placed_count + 1,
                  placed_value = {d}.placed_value + EXCLUDED.placed_value,
                  last_order_at = greatest({d}.last_order_at, EXCLUDED.last_order_at)""",
            dict(tenant_id=env.tenant_id, order_id=env.aggregate_id, customer_id=placed.customer_id,
                 currency=placed.total.currency_code, total=amount(placed.total), at=occurred(env)),
        )
    ]


def _to(state: str):  # type: ignore[no-untyped-def]
    def move(env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
        d, i = tables[DASH], tables[INDEX]
        # Leave the bucket the order was in (read from the CTE's snapshot), enter the new one.
        sets = ",\n".join(
            f"""{s}_count = d.{s}_count + (CASE WHEN '{s}' = %(state)s THEN 1 ELSE 0 END)
                                        - (CASE WHEN m.state = '{s}' THEN 1 ELSE 0 END),
                {s}_value = d.{s}_value + (CASE WHEN '{s}' = %(state)s THEN m.total ELSE 0 END)
                                        - (CASE WHEN m.state = '{s}' THEN m.total ELSE 0 END)"""
            for s in STATES
        )
        return [
            Statement(
                f"""WITH prev AS (SELECT * FROM {i} WHERE tenant_id = %(tenant_id)s AND order_id = %(order_id)s),
                    m AS (UPDATE {i} x SET state = %(state)s FROM prev
                          WHERE x.tenant_id = prev.tenant_id AND x.order_id = prev.order_id
                          RETURNING prev.customer_id, prev.currency_code, prev.total, prev.state)
                    UPDATE {d} d SET {sets}
                    FROM m WHERE d.tenant_id = %(tenant_id)s AND d.customer_id = m.customer_id
                      AND d.currency_code = m.currency_code""",
                dict(tenant_id=env.tenant_id, order_id=env.aggregate_id, state=state),
            )
        ]

    return move


MODEL = ReadModel(
    name=DASH,
    tables=(CustomerOrdersRow.__table__, CustomerOrderStateRow.__table__),  # type: ignore[arg-type]
    handlers={
        "order_placed": order_placed,
        "order_confirmed": _to("confirmed"),
        "order_cancelled": _to("cancelled"),
        "order_shipped": _to("shipped"),
    },
)
