"""QueryService: reads the projector's read models; never touches the write side."""

from __future__ import annotations

import asyncio
import time

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.v1 import query_service_pb2 as pb
from orders.v1 import query_service_pb2_grpc as pb_grpc
from orders.v1 import types_pb2
from projector import read_model
from server import db, errors, serving, wire
from server.config import Settings
from server.domain.commands import id_violations
from server.domain.errors import DomainError, InvalidCommandError, NotFoundError

# Leave this much of the caller's deadline to answer "not caught up yet" instead of timing out.
ANSWER_MARGIN_SECONDS = 0.05


def summary_to_proto(row: read_model.OrderSummaryRow) -> pb.OrderSummary:
    update_time = timestamp_pb2.Timestamp()
    update_time.FromDatetime(row.updated_at)
    total = db.from_decimal(row.currency_code, row.total)
    return pb.OrderSummary(
        order_id=row.order_id,
        customer_id=row.customer_id,
        total=wire.money_to_proto(total),
        state=types_pb2.OrderState.Value(f"ORDER_STATE_{row.state}"),
        version=row.version,
        lines=[
            types_pb2.OrderLine(
                product_id=line["product_id"],
                quantity=line["quantity"],
                unit_price=types_pb2.Money(
                    currency_code=line["currency_code"], units=int(line["units"]), nanos=line["nanos"]
                ),
            )
            for line in row.lines
        ],
        update_time=update_time,
    )


class QueryService(pb_grpc.QueryServiceServicer):
    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    async def GetOrderSummary(
        self, request: pb.GetOrderSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderSummaryResponse:
        tenant_id = serving.tenant_of(context)
        try:
            if found := id_violations("order_id", request.order_id):
                raise InvalidCommandError(found)
            if request.consistency_token:
                await self._wait_for(context, tenant_id, wire.ConsistencyToken.decode(request.consistency_token))
            async with self._engine.connect() as conn:
                row = await read_model.get_order_summary(conn, tenant_id, request.order_id)
            if row is None:
                raise NotFoundError("order", request.order_id)
            return pb.GetOrderSummaryResponse(summary=summary_to_proto(row))
        except DomainError as exc:
            await errors.abort(context, errors.to_status(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait_for(
        self, context: grpc.aio.ServicerContext, tenant_id: str, token: wire.ConsistencyToken
    ) -> None:
        """Waits, within the call's deadline, until the read models include the token's write."""
        remaining = context.time_remaining()
        budget = self._settings.read_wait_seconds if remaining is None else remaining
        give_up = time.monotonic() + max(0.0, budget - ANSWER_MARGIN_SECONDS)
        pause = 0.002
        while True:
            async with self._engine.connect() as conn:
                version = await read_model.applied_version(
                    conn, tenant_id, token.aggregate_type, token.aggregate_id
                )
            if version >= token.version:
                return
            if time.monotonic() + pause > give_up:
                await errors.abort(
                    context,
                    errors.unavailable(
                        "the read model has not caught up with this write yet; retry the call",
                        "READ_MODEL_BEHIND",
                        wanted_version=str(token.version),
                        current_version=str(version),
                    ),
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)


async def run(settings: Settings) -> None:
    """Composition root of the query-server process."""
    engine = db.create_engine(settings.require_database_url())

    async def ready() -> bool:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    try:
        await serving.serve(
            addr=settings.query_addr,
            service_names=[pb.DESCRIPTOR.services_by_name["QueryService"].full_name],
            register=lambda server: pb_grpc.add_QueryServiceServicer_to_server(QueryService(engine, settings), server),
            ready=ready,
            max_request_bytes=settings.max_request_bytes,
            grace_seconds=settings.grace_seconds,
            metrics_addr=settings.metrics_addr,
        )
    finally:
        await engine.dispose()
