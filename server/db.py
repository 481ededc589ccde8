"""Write-side tables, the engine factory, and the statements one command transaction runs."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.domain.commands import OrderLine
from server.domain.errors import NotFoundError, VersionConflictError
from server.domain.model import Customer, Order, OrderState, Product
from server.domain.money import NANOS_PER_UNIT, Money

NOTIFY_CHANNEL = "orders_events"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


def _now() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class CustomerRow(Base):
    __tablename__ = "customers"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text)
    credit_currency: Mapped[str] = mapped_column(String(3))
    credit_limit: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    credit_reserved: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class ProductRow(Base):
    __tablename__ = "products"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    on_hand: Mapped[int] = mapped_column(BigInteger)
    reserved: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class OrderRow(Base):
    __tablename__ = "orders"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    currency_code: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "customer_id"], ["customers.tenant_id", "customers.customer_id"]
        ),
    )


class OrderLineRow(Base):
    __tablename__ = "order_lines"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    currency_code: Mapped[str] = mapped_column(String(3))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "order_id"], ["orders.tenant_id", "orders.order_id"], ondelete="CASCADE"
        ),
    )


class EventRow(Base):
    """The outbox and the audit log in one: append-only, published_at set by the relay."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    aggregate_version: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _now()
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("tenant_id", "aggregate_type", "aggregate_id", "aggregate_version"),
    )


class IdempotencyRow(Base):
    """One row per accepted request_id (AIP-155): the request's hash and the response sent."""

    __tablename__ = "idempotency"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _now()


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def to_decimal(money: Money) -> Decimal:
    return Decimal(money.total_nanos).scaleb(-9)


def from_decimal(currency_code: str, amount: Decimal) -> Money:
    return Money.of_nanos(currency_code, int(amount * NANOS_PER_UNIT))


# --- idempotency ------------------------------------------------------------------------------


async def claim_request(
    conn: AsyncConnection, tenant_id: str, request_id: str, method: str, request_hash: bytes
) -> IdempotencyRow | None:
    """Claims request_id for this transaction, or returns the row of the request that holds it.

    A concurrent duplicate blocks on the primary key until the first transaction ends, then sees
    its committed row: concurrent retries produce one effect.
    """
    claimed = await conn.execute(
        insert(IdempotencyRow)
        .values(tenant_id=tenant_id, request_id=request_id, method=method, request_hash=request_hash)
        .on_conflict_do_nothing()
        .returning(IdempotencyRow.request_id)
    )
    if claimed.first() is not None:
        return None
    row = await conn.execute(
        select(IdempotencyRow.__table__).where(
            IdempotencyRow.tenant_id == tenant_id, IdempotencyRow.request_id == request_id
        )
    )
    return IdempotencyRow(**row.one()._mapping)


async def store_response(conn: AsyncConnection, tenant_id: str, request_id: str, response: bytes) -> None:
    await conn.execute(
        update(IdempotencyRow)
        .where(IdempotencyRow.tenant_id == tenant_id, IdempotencyRow.request_id == request_id)
        .values(response=response)
    )


# --- aggregates -------------------------------------------------------------------------------


async def _insert_new(conn: AsyncConnection, row: type[Base], values: dict[str, Any]) -> bool:
    """Inserts a new aggregate's row; False when its id is taken."""
    table = row.__table__
    inserted = await conn.execute(insert(table).values(**values).on_conflict_do_nothing().returning(table.c.version))
    return inserted.first() is not None


async def _update_guarded(
    conn: AsyncConnection,
    row: type[Base],
    key: dict[str, str],
    expected: int,
    values: dict[str, Any],
    aggregate_type: str,
) -> None:
    """The optimistic-concurrency write: changes the row only if it is still at `expected`.

    A concurrent writer holding the row makes this wait, then match nothing: exactly one of
    several commands with the same expected version wins, the others get VERSION_CONFLICT.
    """
    table = row.__table__
    where = [table.c[name] == value for name, value in key.items()]
    result = await conn.execute(
        update(table).where(*where, table.c.version == expected).values(**values, updated_at=func.now())
    )
    if result.rowcount == 1:
        return
    aggregate_id = key[f"{aggregate_type}_id"]
    actual = (await conn.execute(select(table.c.version).where(*where))).scalar_one_or_none()
    if actual is None:
        raise NotFoundError(aggregate_type, aggregate_id)
    raise VersionConflictError(aggregate_type, aggregate_id, expected, int(actual))


async def load_customer(conn: AsyncConnection, tenant_id: str, customer_id: str) -> Customer | None:
    t = CustomerRow.__table__
    row = (
        await conn.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.customer_id == customer_id))
    ).first()
    if row is None:
        return None
    return Customer(
        customer_id=row.customer_id,
        display_name=row.display_name,
        email=row.email,
        credit_limit=from_decimal(row.credit_currency, row.credit_limit),
        credit_reserved=from_decimal(row.credit_currency, row.credit_reserved),
        version=row.version,
    )


def _customer_values(customer: Customer) -> dict[str, Any]:
    return dict(
        credit_currency=customer.credit_limit.currency_code,
        credit_limit=to_decimal(customer.credit_limit),
        credit_reserved=to_decimal(customer.credit_reserved),
        version=customer.version,
    )


async def insert_customer(conn: AsyncConnection, tenant_id: str, customer: Customer) -> bool:
    return await _insert_new(
        conn,
        CustomerRow,
        dict(
            tenant_id=tenant_id,
            customer_id=customer.customer_id,
            display_name=customer.display_name,
            email=customer.email,
            **_customer_values(customer),
        ),
    )


async def save_customer(conn: AsyncConnection, tenant_id: str, customer: Customer, expected: int) -> None:
    key = dict(tenant_id=tenant_id, customer_id=customer.customer_id)
    await _update_guarded(conn, CustomerRow, key, expected, _customer_values(customer), "customer")


async def load_product(conn: AsyncConnection, tenant_id: str, product_id: str) -> Product | None:
    t = ProductRow.__table__
    row = (
        await conn.execute(
            select(t.c.product_id, t.c.on_hand, t.c.reserved, t.c.version).where(
                t.c.tenant_id == tenant_id, t.c.product_id == product_id
            )
        )
    ).first()
    return None if row is None else Product(*row)


async def insert_product(conn: AsyncConnection, tenant_id: str, product: Product) -> bool:
    return await _insert_new(
        conn,
        ProductRow,
        dict(
            tenant_id=tenant_id,
            product_id=product.product_id,
            on_hand=product.on_hand,
            reserved=product.reserved,
            version=product.version,
        ),
    )


async def save_product(conn: AsyncConnection, tenant_id: str, product: Product, expected: int) -> None:
    key = dict(tenant_id=tenant_id, product_id=product.product_id)
    values = dict(on_hand=product.on_hand, reserved=product.reserved, version=product.version)
    await _update_guarded(conn, ProductRow, key, expected, values, "product")


async def insert_order(conn: AsyncConnection, tenant_id: str, order: Order) -> bool:
    """Inserts a new order and its lines; False when the id is taken."""
    inserted = await _insert_new(
        conn,
        OrderRow,
        dict(
            tenant_id=tenant_id,
            order_id=order.order_id,
            customer_id=order.customer_id,
            state=order.state.value,
            currency_code=order.total.currency_code,
            total=to_decimal(order.total),
            version=order.version,
        ),
    )
    if not inserted:
        return False
    await conn.execute(
        insert(OrderLineRow),
        [
            dict(
                tenant_id=tenant_id,
                order_id=order.order_id,
                line_no=i,
                product_id=line.product_id,
                quantity=line.quantity,
                currency_code=line.unit_price.currency_code,
                unit_price=to_decimal(line.unit_price),
            )
            for i, line in enumerate(order.lines)
        ],
    )
    return True


async def save_order(conn: AsyncConnection, tenant_id: str, order: Order, expected: int) -> None:
    """Saves a state change; lines and total never change after placement."""
    key = dict(tenant_id=tenant_id, order_id=order.order_id)
    await _update_guarded(conn, OrderRow, key, expected, dict(state=order.state.value, version=order.version), "order")


async def load_order(conn: AsyncConnection, tenant_id: str, order_id: str) -> Order | None:
    t, lt = OrderRow.__table__, OrderLineRow.__table__
    row = (await conn.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.order_id == order_id))).first()
    if row is None:
        return None
    lines = await conn.execute(
        select(lt.c.product_id, lt.c.quantity, lt.c.currency_code, lt.c.unit_price)
        .where(lt.c.tenant_id == tenant_id, lt.c.order_id == order_id)
        .order_by(lt.c.line_no)
    )
    return Order(
        order_id=row.order_id,
        customer_id=row.customer_id,
        lines=tuple(OrderLine(p, q, from_decimal(c, price)) for p, q, c, price in lines),
        total=from_decimal(row.currency_code, row.total),
        state=OrderState(row.state),
        version=row.version,
    )


# --- outbox -----------------------------------------------------------------------------------


async def append_event(
    conn: AsyncConnection,
    *,
    event_id: uuid.UUID,
    tenant_id: str,
    aggregate_type: str,
    aggregate_id: str,
    aggregate_version: int,
    event_type: str,
    payload: bytes,
    headers: dict[str, str],
) -> None:
    """Appends one event after the state change it records, then asks for a relay wake-up.

    NOTIFY is transactional: the relay hears it only if and when this transaction commits.
    """
    await conn.execute(
        insert(EventRow).values(
            event_id=event_id,
            tenant_id=tenant_id,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            aggregate_version=aggregate_version,
            event_type=event_type,
            payload=payload,
            headers=headers,
        )
    )
    await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
