"""CommandService: translate the request, run its handler in one transaction, translate back."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server import db, errors, handlers, serving, wire
from server.config import Settings
from server.domain.errors import DomainError, FieldViolation, InvalidCommandError, RequestIdReusedError

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 10.0
MIN_USEFUL_SECONDS = 0.005
ID_FIELDS = {"customer": "customer_id", "product": "product_id", "order": "order_id"}


class CommandService(pb_grpc.CommandServiceServicer):
    """Every RPC is the same pipeline; the request's type picks the command and its handler."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def RegisterCustomer(self, request: pb.RegisterCustomerRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def ReserveCredit(self, request: pb.ReserveCreditRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def ReleaseCredit(self, request: pb.ReleaseCreditRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def AddStock(self, request: pb.AddStockRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def ReserveStock(self, request: pb.ReserveStockRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def ReleaseStock(self, request: pb.ReleaseStockRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def ConfirmOrder(self, request: pb.ConfirmOrderRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def ShipOrder(self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._execute(request, context)

    async def _execute(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        """One command, one transaction: claim the request id, run the handler, store the response."""
        method = type(request).__name__.removesuffix("Request")
        response_type: type[Message] = getattr(pb, f"{method}Response")
        request_id: str = getattr(request, "request_id")
        try:
            cmd = wire.to_command(request)
            tenant_id = serving.tenant_of(context)
            violations = wire.request_id_violations(request_id) + _tenant_violations(tenant_id) + cmd.violations()
            if violations:
                raise InvalidCommandError(violations)
            ctx = wire.EventContext(
                tenant_id=tenant_id,
                correlation_id=serving.metadata_value(context, "x-correlation-id") or str(uuid.uuid4()),
                causation_id=request_id,
            )
            digest = wire.request_hash(method, request)
            remaining = context.time_remaining()
            budget = DEFAULT_DEADLINE_SECONDS if remaining is None else remaining
            if budget < MIN_USEFUL_SECONDS:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "too little time left to run the command")
            async with self._engine.begin() as conn:
                # Never run past the caller's deadline: the database gives up when the caller would.
                await conn.execute(text(f"SET LOCAL statement_timeout = {max(1, int(budget * 1000))}"))
                prior = await db.claim_request(conn, tenant_id, request_id, method, digest)
                if prior is not None:
                    if prior.method != method or prior.request_hash != digest or prior.response is None:
                        raise RequestIdReusedError(request_id)
                    return response_type.FromString(prior.response)
                written = await handlers.HANDLERS[type(cmd)](conn, ctx, cmd)
                token = wire.ConsistencyToken(written.aggregate_type, written.aggregate_id, written.version)
                response = response_type(
                    **{ID_FIELDS[written.aggregate_type]: written.aggregate_id},
                    version=written.version,
                    consistency_token=token.encode(),
                )
                await db.store_response(conn, tenant_id, request_id, response.SerializeToString())
                return response
        except DomainError as exc:
            await errors.abort(context, errors.to_status(exc))
        except DBAPIError as exc:
            log.warning("database error", extra={"method": method, "error": type(exc.orig).__name__})
            if "statement timeout" in str(exc.orig) or "canceling statement" in str(exc.orig):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the command did not finish within the deadline")
            await errors.abort(
                context,
                errors.unavailable("the database is unavailable; retry with the same request_id", "DATABASE_UNAVAILABLE"),
            )
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("command failed unexpectedly", extra={"method": method})
            await errors.abort(context, errors.internal("internal error; the command was not applied"))
        raise AssertionError("unreachable")  # pragma: no cover


def _tenant_violations(tenant_id: str) -> list[FieldViolation]:
    if 0 < len(tenant_id) <= 64 and tenant_id.replace("-", "").replace("_", "").isalnum() and tenant_id.isascii():
        return []
    return [FieldViolation(serving.TENANT_KEY, "metadata must be 1-64 ASCII letters, digits, - or _")]


async def run(settings: Settings) -> None:
    """Composition root of the command-server process."""
    engine = db.create_engine(settings.require_database_url())

    async def ready() -> bool:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    try:
        await serving.serve(
            addr=settings.command_addr,
            service_names=[pb.DESCRIPTOR.services_by_name["CommandService"].full_name],
            register=lambda server: pb_grpc.add_CommandServiceServicer_to_server(CommandService(engine), server),
            ready=ready,
            max_request_bytes=settings.max_request_bytes,
            grace_seconds=settings.grace_seconds,
        )
    finally:
        await engine.dispose()
