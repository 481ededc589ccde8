"""`order_summaries`: one row per order as GetOrderSummary returns it (the query server's table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orders.v1 import events_pb2
from projector.tables import OrderSummaryRow
from projector.views._money import nanos, occurred
from projector.views.base import Apply, Conn, ReadModel, Tables, rows_json, select_json

T = OrderSummaryRow.__tablename__
Key = tuple[str, str]
_STATE, _VERSION, _AT, _SEQ = 3, 7, 8, 9  # in a placed row


@dataclass
class Changes:
    # [tenant, order, customer, state, currency, total nanos, lines, version, at micros, stream seq]
    placed: dict[Key, list[Any]] = field(default_factory=dict)
    moved: dict[Key, tuple[str, int, int, int]] = field(default_factory=dict)  # the last state wins

    async def flush(self, conn: Conn, tables: Tables) -> None:
        for key, row in self.placed.items():  # placed and moved in one batch: insert the final row
            if key in self.moved:
                row[_STATE], row[_VERSION], row[_AT], row[_SEQ] = self.moved.pop(key)
        if self.placed:
            await conn.execute(
                f"""INSERT INTO {tables[T]} (tenant_id, order_id, customer_id, state, currency_code, total, lines,
                                            version, updated_at, stream_seq)
                    {select_json("text", "text", "text", "text", "text", "nanos", "jsonb", "bigint", "micros", "bigint")}
                    ON CONFLICT DO NOTHING""",
                [rows_json(self.placed.values())],
            )
        if self.moved:
            await conn.execute(
                f"""UPDATE {tables[T]} s SET state = m.state, version = m.version, updated_at = m.at,
                           stream_seq = m.seq
                    FROM ({select_json("text", "text", "text", "bigint", "micros", "bigint")})
                         AS m(tenant_id, order_id, state, version, at, seq)
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
        nanos(placed.total), lines, env.aggregate_version, occurred(env), stream_seq,
    ]


def _to(state: str) -> Apply:
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
