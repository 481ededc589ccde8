"""The saga's tables (typed SQLAlchemy models: the schema migration 0009 builds)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Computed, DateTime, Index, MetaData, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(column_0_label)s"})


class Base(DeclarativeBase):
    metadata = metadata


class SagaRow(Base):
    """One order's saga: its state, when it next needs attention (`wake_at`: the earlier of its
    deadline and the time its pending command is sent again), the rest as one JSON document
    (server/saga/store.py reads and writes it), and a version every change is guarded by."""

    __tablename__ = "sagas"
    __table_args__ = (
        Index("ix_sagas_wake_at", "wake_at", postgresql_where=text("wake_at IS NOT NULL")),
        Index("ix_sagas_state", "state", "updated_at"),
    )
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(24))
    deadline_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    retry_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    wake_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), Computed("LEAST(deadline_at, retry_at)", persisted=True))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SagaCheckpointRow(Base):
    """Highest stream sequence the saga's consumer has committed, written with the sagas it
    changed; and since when the saga drives orders (set by the migration that made the table)."""

    __tablename__ = "saga_checkpoints"
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    drives_since: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
