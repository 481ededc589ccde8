"""One apply function per event type and read model. Each runs inside the consumer's
transaction, only for the next version of its aggregate (the consumer guards that)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from orders.v1 import events_pb2, types_pb2
from projector.read_model import OrderSummaryRow

Apply = Callable[[AsyncConnection, events_pb2.Envelope, int], Awaitable[None]]


def amount(money: types_pb2.Money) -> Decimal:
    return Decimal(money.units * 1_000_000_000 + money.nanos).scaleb(-9)


async def order_placed(conn: AsyncConnection, env: events_pb2.Envelope, stream_seq: int) -> None:
    placed = env.order_placed
    await conn.execute(
        insert(OrderSummaryRow)
        .values(
            tenant_id=env.tenant_id,
            order_id=placed.order_id,
            customer_id=placed.customer_id,
            state="PLACED",
            currency_code=placed.total.currency_code,
            total=amount(placed.total),
            lines=[
                {
                    "product_id": line.product_id,
                    "quantity": line.quantity,
                    "currency_code": line.unit_price.currency_code,
                    "units": str(line.unit_price.units),
                    "nanos": line.unit_price.nanos,
                }
                for line in placed.lines
            ],
            version=env.aggregate_version,
            updated_at=env.occur_time.ToDatetime(dt.timezone.utc),
            stream_seq=stream_seq,
        )
        .on_conflict_do_nothing()
    )


async def _set_state(conn: AsyncConnection, env: events_pb2.Envelope, stream_seq: int, state: str) -> None:
    await conn.execute(
        update(OrderSummaryRow)
        .where(OrderSummaryRow.tenant_id == env.tenant_id, OrderSummaryRow.order_id == env.aggregate_id)
        .values(
            state=state,
            version=env.aggregate_version,
            updated_at=env.occur_time.ToDatetime(dt.timezone.utc),
            stream_seq=stream_seq,
        )
    )


async def order_confirmed(conn: AsyncConnection, env: events_pb2.Envelope, stream_seq: int) -> None:
    await _set_state(conn, env, stream_seq, "CONFIRMED")


async def order_cancelled(conn: AsyncConnection, env: events_pb2.Envelope, stream_seq: int) -> None:
    await _set_state(conn, env, stream_seq, "CANCELLED")


async def order_shipped(conn: AsyncConnection, env: events_pb2.Envelope, stream_seq: int) -> None:
    await _set_state(conn, env, stream_seq, "SHIPPED")


async def ignore(conn: AsyncConnection, env: events_pb2.Envelope, stream_seq: int) -> None:
    """Events no read model needs yet still advance the aggregate's applied version."""


APPLY: dict[str, Apply] = {
    "customer_registered": ignore,
    "credit_reserved": ignore,
    "credit_released": ignore,
    "stock_added": ignore,
    "stock_reserved": ignore,
    "stock_released": ignore,
    "order_placed": order_placed,
    "order_confirmed": order_confirmed,
    "order_cancelled": order_cancelled,
    "order_shipped": order_shipped,
}
