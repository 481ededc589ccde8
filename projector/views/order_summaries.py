"""`order_summaries`: one row per order as GetOrderSummary, ListOrders and WatchOrders return it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import BigInteger, DateTime, FetchedValue, Index, Numeric, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from orders.v1 import events_pb2, types_pb2
from projector.tables import Base
from projector.views._money import nanos, occurred
from projector.views.base import Apply, Conn, ReadModel, Tables, rows_json, select_json


class OrderSummaryRow(Base):
    """One order as GetOrderSummary returns it; `lines` is a JSON list of exact amounts."""

    __tablename__ = "order_summaries"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    currency_code: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    stream_seq: Mapped[int] = mapped_column(BigInteger)
    # Stamped by a trigger on every write (migration 0005): commit order, for WatchOrders.
    change_seq: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue(), server_onupdate=FetchedValue())
    # Why a cancelled order was cancelled (a CancellationReason name, e.g. "OUT_OF_STOCK", and the
    # note); empty for an order in any other state.
    cancellation_reason: Mapped[str] = mapped_column(String(32), server_default="")
    cancellation_note: Mapped[str] = mapped_column(Text, server_default="")
    __table_args__ = (
        Index("ix_order_summaries_tenant_change_seq", "tenant_id", "change_seq"),
        Index("ix_order_summaries_tenant_customer_change_seq", "tenant_id", "customer_id", "change_seq"),
        Index("ix_order_summaries_tenant_customer_order", "tenant_id", "customer_id", "order_id"),
    )


T = OrderSummaryRow.__tablename__
Key = tuple[str, str]
_STATE = 3  # in a placed row, where the fields of a move begin
# A move: state, version, at micros, stream seq, cancellation reason, cancellation note.
Move = tuple[str, int, int, int, str, str]


@dataclass
class Changes:
    # [tenant, order, customer, state, currency, total nanos, lines, version, at micros, stream seq,
    #  cancellation reason, cancellation note]
    placed: dict[Key, list[Any]] = field(default_factory=dict)
    moved: dict[Key, Move] = field(default_factory=dict)  # the last state wins

    async def flush(self, conn: Conn, tables: Tables) -> None:
        for key, row in self.placed.items():  # placed and moved in one batch: insert the final row
            if key in self.moved:
                state, version, at, seq, reason, note = self.moved.pop(key)
                row[_STATE], row[7:] = state, [version, at, seq, reason, note]
        if self.placed:
            await conn.execute(
                f"""INSERT INTO {tables[T]} (tenant_id, order_id, customer_id, state, currency_code, total, lines,
                                            version, updated_at, stream_seq, cancellation_reason, cancellation_note)
                    {select_json("text", "text", "text", "text", "text", "nanos", "jsonb", "bigint", "micros", "bigint",
                                 "text", "text")}
                    ON CONFLICT DO NOTHING""",
                [rows_json(self.placed.values())],
            )
        if self.moved:
            await conn.execute(
                f"""UPDATE {tables[T]} s SET state = m.state, version = m.version, updated_at = m.at,
                           stream_seq = m.seq, cancellation_reason = m.reason, cancellation_note = m.note
                    FROM ({select_json("text", "text", "text", "bigint", "micros", "bigint", "text", "text")})
                         AS m(tenant_id, order_id, state, version, at, seq, reason, note)
                    WHERE s.tenant_id = m.tenant_id AND s.order_id = m.order_id""",
                [rows_json((*key, *move) for key, move in self.moved.items())],
            )


def order_placed(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    placed = env.order_placed
    lines = [
        {
            "product_id": line.product_id,
            "quantity": line.quantity,
            "currency_code": line.unit_price.currency_code,
            "units": str(line.unit_price.units),
            "nanos": line.unit_price.nanos,
        }
        for line in placed.lines
    ]
    changes.placed[(env.tenant_id, env.aggregate_id)] = [
        env.tenant_id, env.aggregate_id, placed.customer_id, "PLACED", placed.total.currency_code,
        nanos(placed.total), lines, env.aggregate_version, occurred(env), stream_seq, "", "",
    ]


def _to(state: str) -> Apply:
    def move(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
        changes.moved[(env.tenant_id, env.aggregate_id)] = (
            state, env.aggregate_version, occurred(env), stream_seq, "", "")

    return move


def reason_name(reason: int) -> str:
    """A CancellationReason as the table keeps it: its name without the prefix ("OUT_OF_STOCK"),
    or its number for a value this contract does not know yet."""
    if reason in types_pb2.CancellationReason.values():
        return types_pb2.CancellationReason.Name(cast(types_pb2.CancellationReason, reason)).removeprefix(
            "CANCELLATION_REASON_")
    return str(reason)


def reason_number(name: str) -> int:
    """The inverse of `reason_name`; 0 (unspecified) for an empty name."""
    if not name:
        return 0
    if name.isdigit():
        return int(name)
    return types_pb2.CancellationReason.Value("CANCELLATION_REASON_" + name)


def order_cancelled(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    cancelled = env.order_cancelled
    changes.moved[(env.tenant_id, env.aggregate_id)] = (
        "CANCELLED", env.aggregate_version, occurred(env), stream_seq, reason_name(cancelled.reason), cancelled.note)


MODEL = ReadModel(
    name=T,
    tables=(OrderSummaryRow.__table__,),  # type: ignore[arg-type]
    changes=Changes,
    handlers={
        "order_placed": order_placed,
        "order_confirmed": _to("CONFIRMED"),
        "order_cancelled": order_cancelled,
        "order_shipped": _to("SHIPPED"),
    },
)


# --- what the query server reads ---------------------------------------------------------------

# The last column is the fulfilment saga's state (server/saga): read beside the summary, never
# stored in it, so it is as current as the saga's own row.
COLUMNS = ("order_id, customer_id, state, currency_code, total, lines, version, updated_at, change_seq,"
           " cancellation_reason, cancellation_note,"
           " coalesce((SELECT s.state FROM sagas s WHERE s.tenant_id = o.tenant_id AND s.order_id = o.order_id), '')")


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
    cancellation_reason: str  # a CancellationReason name (see reason_name); empty unless cancelled
    cancellation_note: str
    saga_state: str = ""  # a SagaState name without its prefix; empty: no saga drives the order


@dataclass(frozen=True)
class WatchFilter:
    """One order, one customer's orders, or (both empty) every order of the tenant."""

    order_id: str = ""
    customer_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"order_id": self.order_id, "customer_id": self.customer_id}


async def order_summary(conn: Conn, tenant_id: str, order_id: str) -> Summary | None:
    cur = await conn.execute(f"SELECT {COLUMNS} FROM {T} o WHERE tenant_id = %s AND order_id = %s", (tenant_id, order_id))
    row = await cur.fetchone()
    return None if row is None else Summary(*row)


async def list_orders(
    conn: Conn, tenant_id: str, customer_id: str, state: str, after_order_id: str, limit: int
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


async def changes_since(conn: Conn, tenant_id: str, filter_: WatchFilter, after_seq: int, limit: int) -> list[Summary]:
    """Matching rows whose last change committed after change sequence `after_seq`, in order.
    A row holds only its latest state, so a reader that fell behind gets each order once, at
    its newest version: updates conflate in the table, not in memory."""
    where = ["tenant_id = %(tenant_id)s", "change_seq > %(after)s"]
    if filter_.order_id:
        where.append("order_id = %(order_id)s")
    if filter_.customer_id:
        where.append("customer_id = %(customer_id)s")
    params = {"tenant_id": tenant_id, "after": after_seq, **filter_.as_dict()}
    return await _summaries(conn, where, "change_seq", limit, params)


async def _summaries(conn: Conn, where: list[str], order_by: str, limit: int, params: dict[str, Any]) -> list[Summary]:
    """The first `limit` rows matching every condition in `where`, by `order_by`."""
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM {T} o WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT %(limit)s",
        {**params, "limit": limit},
    )
    return [Summary(*row) for row in await cur.fetchall()]
