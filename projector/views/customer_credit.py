"""`customer_credit`: one row per customer with its credit limit, credit reserved and version, as
GetCustomer returns them (and a saga reads before it reserves or releases credit).

A customer's first event is always CustomerRegistered (version 1), and the projector applies
version v only on top of v-1, so reservations and releases always find the row their
registration made. A batch's reservations and releases of one customer are summed into one
change of `credit_reserved`; `version` is the last one applied."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from orders.v1 import events_pb2
from projector.tables import Base
from projector.views._money import nanos, occurred
from projector.views.base import Conn, ReadModel, Tables, rows_json, select_json


class CustomerCreditRow(Base):
    __tablename__ = "customer_credit"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3))
    credit_limit: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    credit_reserved: Mapped[Decimal] = mapped_column(Numeric(38, 9))
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


T = CustomerCreditRow.__tablename__
Key = tuple[str, str]


@dataclass
class Moved:
    """A batch's effect on one customer's reserved credit: a signed sum, the last version and time."""

    reserved: int = 0  # nanos
    version: int = 0
    at: int = 0  # micros


@dataclass
class Changes:
    registered: dict[Key, tuple[str, int, int, int]] = field(default_factory=dict)  # currency, limit, version, at
    moved: dict[Key, Moved] = field(default_factory=dict)

    def move(self, env: events_pb2.Envelope, delta: int) -> None:
        moved = self.moved.setdefault((env.tenant_id, env.aggregate_id), Moved())
        moved.reserved += delta
        moved.version, moved.at = env.aggregate_version, occurred(env)

    async def flush(self, conn: Conn, tables: Tables) -> None:
        t = tables[T]
        if self.registered:
            await conn.execute(
                f"""INSERT INTO {t} (tenant_id, customer_id, currency_code, credit_limit, credit_reserved, version,
                                     updated_at)
                    SELECT tenant_id, customer_id, currency_code, credit_limit, 0, version, at
                    FROM ({select_json("text", "text", "text", "nanos", "bigint", "micros")})
                         AS r(tenant_id, customer_id, currency_code, credit_limit, version, at)
                    ON CONFLICT DO NOTHING""",
                [rows_json((*key, *row) for key, row in self.registered.items())],
            )
        if self.moved:  # after the inserts: a customer registered in this batch is there to update
            await conn.execute(
                f"""UPDATE {t} c SET credit_reserved = c.credit_reserved + m.reserved, version = m.version,
                           updated_at = m.at
                    FROM ({select_json("text", "text", "nanos", "bigint", "micros")})
                         AS m(tenant_id, customer_id, reserved, version, at)
                    WHERE c.tenant_id = m.tenant_id AND c.customer_id = m.customer_id""",
                [rows_json((*key, m.reserved, m.version, m.at) for key, m in self.moved.items())],
            )


def customer_registered(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    limit = env.customer_registered.credit_limit
    changes.registered[(env.tenant_id, env.aggregate_id)] = (
        limit.currency_code, nanos(limit), env.aggregate_version, occurred(env))


def credit_reserved(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.move(env, nanos(env.credit_reserved.amount))


def credit_released(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    changes.move(env, -nanos(env.credit_released.amount))


def customer_forgotten(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
    """No personal data lives here, so there is nothing to erase: only the version moves."""
    changes.move(env, 0)


MODEL = ReadModel(
    name=T,
    tables=(CustomerCreditRow.__table__,),  # type: ignore[arg-type]
    changes=Changes,
    handlers={
        "customer_registered": customer_registered,
        "credit_reserved": credit_reserved,
        "credit_released": credit_released,
        "customer_forgotten": customer_forgotten,
    },
)


# --- what the query server reads ---------------------------------------------------------------


@dataclass(frozen=True)
class Credit:
    customer_id: str
    currency_code: str
    credit_limit: Decimal
    credit_reserved: Decimal
    version: int
    updated_at: dt.datetime

    @property
    def credit_available(self) -> Decimal:
        return self.credit_limit - self.credit_reserved


async def read(conn: Conn, tenant_id: str, customer_id: str) -> Credit | None:
    cur = await conn.execute(
        f"""SELECT customer_id, currency_code, credit_limit, credit_reserved, version, updated_at
            FROM {T} WHERE tenant_id = %s AND customer_id = %s""",
        (tenant_id, customer_id),
    )
    row = await cur.fetchone()
    return None if row is None else Credit(*row)
