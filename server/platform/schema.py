"""Write-side tables (typed SQLAlchemy models: the schema Alembic migrates) and money as numeric."""

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
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.domain.money import NANOS_PER_UNIT, Money

NOTIFY_CHANNEL = "orders_events"  # the relay LISTENs; the command server NOTIFYs after commits

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
    # Set when the customer was forgotten: display_name and email are empty from then on.
    forgotten_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CustomerKeyRow(Base):
    """A customer's data key wrapped by the KEK (server.platform.personal); deleting it forgets
    the customer. request_id names the registration, whose idempotency hash is scrubbed then."""

    __tablename__ = "customer_keys"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    request_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = _now()


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
    # The stream sequence the relay got back; lets a rebuild reproduce order_summaries.stream_seq.
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        UniqueConstraint("tenant_id", "aggregate_type", "aggregate_id", "aggregate_version"),
        # The relay's scan: only unpublished rows, in id order.
        Index("ix_events_unpublished", "id", postgresql_where=text("published_at IS NULL")),
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


def to_decimal(money: Money) -> Decimal:
    return Decimal(money.total_nanos).scaleb(-9)


def from_decimal(currency_code: str, amount: Decimal) -> Money:
    return Money.of_nanos(currency_code, int(amount * NANOS_PER_UNIT))

