"""`product_stock`: one row per product with its units on hand, units reserved and version, as
GetProduct returns them (and a saga reads before it reserves or releases stock).

A product's first event is always StockAdded (AddStock at version 0 creates it), so an upsert
that adds a batch's signed sums to the row makes it and then keeps it; `version` is the last one
applied."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from orders.v1 import events_pb2
from projector.tables import Base
from projector.views._money import occurred
from projector.views.base import Conn, ReadModel, Tables, rows_json, select_json


class ProductStockRow(Base):
    __tablename__ = "product_stock"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    on_hand: Mapped[int] = mapped_column(BigInteger)
    reserved: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


T = ProductStockRow.__tablename__
Key = tuple[str, str]


@dataclass
class Moved:
    """A batch's effect on one product: signed sums of units, the last version and time."""

    on_hand: int = 0
    reserved: int = 0
    version: int = 0
    at: int = 0  # micros


@dataclass
class Changes:
    moved: dict[Key, Moved] = field(default_factory=dict)

    def move(self, env: events_pb2.Envelope, on_hand: int = 0, reserved: int = 0) -> None:
        moved = self.moved.setdefault((env.tenant_id, env.aggregate_id), Moved())
        moved.on_hand += on_hand
        moved.reserved += reserved
        moved.version, moved.at = env.aggregate_version, occurred(env)

    async def flush(self, conn: Conn, tables: Tables) -> None:
        t = tables[T]
        await conn.execute(
            f"""INSERT INTO {t} (tenant_id, product_id, on_hand, reserved, version, updated_at)
                {select_json("text", "text", "bigint", "bigint", "bigint", "micros")}
                ON CONFLICT (tenant_id, product_id) DO UPDATE SET
                  on_hand = {t}.on_hand + EXCLUDED.on_hand, reserved = {t}.reserved + EXCLUDED.reserved,
                  version = EXCLUDED.version, updated_at = EXCLUDED.updated_at""",
            [rows_json((*key, m.on_hand, m.reserved, m.version, m.at) for key, m in self.moved.items())],
        )


def stock_added(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.move(env, on_hand=env.stock_added.quantity)


def stock_reserved(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.move(env, reserved=env.stock_reserved.quantity)


def stock_released(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.move(env, reserved=-env.stock_released.quantity)


MODEL = ReadModel(
    name=T,
    tables=(ProductStockRow.__table__,),  # type: ignore[arg-type]
    changes=Changes,
    handlers={"stock_added": stock_added, "stock_reserved": stock_reserved, "stock_released": stock_released},
)


# --- what the query server reads ---------------------------------------------------------------


@dataclass(frozen=True)
class Stock:
    product_id: str
    on_hand: int
    reserved: int
    version: int
    updated_at: dt.datetime

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


async def read(conn: Conn, tenant_id: str, product_id: str) -> Stock | None:
    cur = await conn.execute(
        f"SELECT product_id, on_hand, reserved, version, updated_at FROM {T} WHERE tenant_id = %s AND product_id = %s",
        (tenant_id, product_id),
    )
    row = await cur.fetchone()
    return None if row is None else Stock(*row)
