"""The projector's bookkeeping tables, and the metadata every read model's tables join (projector/views)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(column_0_label)s"})


class Base(DeclarativeBase):
    metadata = metadata


class AppliedVersionRow(Base):
    """The version of every aggregate the read models include: the guard against duplicates and
    gaps, and what a consistency token waits for."""

    __tablename__ = "applied_versions"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    aggregate_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    applied_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class CheckpointRow(Base):
    """Highest stream sequence a consumer has committed; written with the rows it covers."""

    __tablename__ = "projection_checkpoints"
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetterRow(Base):
    """An event the projector could not apply, parked with its error, trace headers and stream
    position; while one is `parked`, later events of its aggregate (of the same tenant: ids of
    different tenants may collide) are parked behind it."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    stream_seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # a redelivery parks nothing twice
    subject: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str] = mapped_column(String(64))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    aggregate_version: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'parked'"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_dead_letters_parked", "tenant_id", "aggregate_type", "aggregate_id",
              postgresql_where=text("status = 'parked'")),
    )


class RebuildRow(Base):
    """A rebuild in progress: its shadow tables exist and the versions it has applied are in
    `rebuild_versions`; `started_at` bounds which aggregates the catch-up must look at."""

    __tablename__ = "rebuilds"
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    high_water_id: Mapped[int] = mapped_column(BigInteger)


class RebuildVersionRow(Base):
    __tablename__ = "rebuild_versions"
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    aggregate_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
