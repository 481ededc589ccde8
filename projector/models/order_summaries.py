"""`order_summaries`: one row per order as GetOrderSummary returns it (the query server's table)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from orders.v1 import events_pb2
from projector.models import Conn, ReadModel, Tables
from projector.models._money import amount, occurred
from projector.read_model import OrderSummaryRow

T = OrderSummaryRow.__tablename__
Key = tuple[str, str]


@dataclass
class Changes:
    placed: dict[Key, dict[str, Any]] = field(default_factory=dict)
    moved: dict[Key, tuple[str, int, dt.datetime, int]] = field(default_factory=dict)  # the last state wins

    async def flush(self, conn: Conn, tables: Tables) -> None:
        for key, row in self.placed.items():  # placed and moved in one batch: insert the final row
            if key in self.moved:
                row["state"], row["version"], row["at"], row["seq"] = self.moved.pop(key)
        if self.placed:
            rows = list(self.placed.values())
            await conn.execute(
                f"""INSERT INTO {tables[T]} (tenant_id, order_id, customer_id, state, currency_code, total, lines,
                                            version, updated_at, stream_seq)
                    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::numeric[],
                                         %b::jsonb[], %b::bigint[], %b::timestamptz[], %b::bigint[])
                    ON CONFLICT DO NOTHING""",
                [[r[c] for r in rows] for c in ("tenant_id", "order_id", "customer_id", "state", "currency_code",
                                                "total", "lines", "version", "at", "seq")],
            )
        if self.moved:
            keys = list(self.moved)
            await conn.execute(
                f"""UPDATE {tables[T]} s SET state = m.state, version = m.version, updated_at = m.at,
                           stream_seq = m.seq
                    FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::timestamptz[], %b::bigint[])
                         AS m(tenant_id, order_id, state, version, at, seq)
                    WHERE s.tenant_id = m.tenant_id AND s.order_id = m.order_id""",
                [[k[0] for k in keys], [k[1] for k in keys], *map(list, zip(*(self.moved[k] for k in keys)))],
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
    changes.placed[(env.tenant_id, env.aggregate_id)] = dict(
        tenant_id=env.tenant_id, order_id=env.aggregate_id, customer_id=placed.customer_id, state="PLACED",
        currency_code=placed.total.currency_code, total=amount(placed.total), lines=Jsonb(lines),
        version=env.aggregate_version, at=occurred(env), seq=stream_seq,
    )


def _to(state: str):  # type: ignore[no-untyped-def]
    def move(changes: Changes, env: events_pb2.Envelope, stream_seq: int) -> None:
        changes.moved[(env.tenant_id, env.aggregate_id)] = (state, env.aggregate_version, occurred(env), stream_seq)

    return move


MODEL = ReadModel(
    name=T,
    tables=(OrderSummaryRow.__table__,),  # type: ignore[arg-type]
    changes=Changes,
    handlers={
        "order_placed": order_placed,
        "order_confirmed": _to("CONFIRMED"),
        "order_cancelled": _to("CANCELLED"),
        "order_shipped": _to("SHIPPED"),
    },
)
