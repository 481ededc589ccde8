"""`order_summaries`: one row per order as GetOrderSummary returns it (the query server's table)."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from orders.v1 import events_pb2
from projector.models import ReadModel, Statement, Tables
from projector.models._money import amount, occurred
from projector.read_model import OrderSummaryRow

T = OrderSummaryRow.__tablename__


def order_placed(env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
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
    return [
        Statement(
            f"""INSERT INTO {tables[T]} (tenant_id, order_id, customer_id, state, currency_code, total, lines,
                                        version, updated_at, stream_seq)
                VALUES (%(tenant_id)s, %(order_id)s, %(customer_id)s, 'PLACED', %(currency_code)s, %(total)s,
                        %(lines)s, %(version)s, %(at)s, %(seq)s)
                ON CONFLICT DO NOTHING""",
            dict(
                tenant_id=env.tenant_id, order_id=env.aggregate_id, customer_id=placed.customer_id,
                currency_code=placed.total.currency_code, total=amount(placed.total), lines=Jsonb(lines),
                version=env.aggregate_version, at=occurred(env), seq=stream_seq,
            ),
        )
    ]


def _to(state: str):  # type: ignore[no-untyped-def]
    def set_state(env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
        return [
            Statement(
                f"""UPDATE {tables[T]} SET state = %(state)s, version = %(version)s, updated_at = %(at)s,
                        stream_seq = %(seq)s
                    WHERE tenant_id = %(tenant_id)s AND order_id = %(order_id)s""",
                dict(state=state, version=env.aggregate_version, at=occurred(env), seq=stream_seq,
                     tenant_id=env.tenant_id, order_id=env.aggregate_id),
            )
        ]

    return set_state


MODEL = ReadModel(
    name=T,
    tables=(OrderSummaryRow.__table__,),  # type: ignore[arg-type]
    handlers={
        "order_placed": order_placed,
        "order_confirmed": _to("CONFIRMED"),
        "order_cancelled": _to("CANCELLED"),
        "order_shipped": _to("SHIPPED"),
    },
)
