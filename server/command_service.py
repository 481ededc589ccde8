"""CommandService: translate the request, run its handler in one transaction, translate back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server import db, errors, handlers, serving, wire
from server.config import Settings
from server.domain.errors import DomainError, InvalidCommandError, FieldViolation, RequestIdReusedError

log = logging.getLogger(__name__)

Resp = TypeVar("Resp", bound=Message)

DEFAULT_DEADLINE_SECONDS = 10.0
MIN_USEFUL_SECONDS = 0.005


class CommandService(pb_grpc.CommandServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def RegisterCustomer(
        self, request: pb.RegisterCustomerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterCustomerResponse:
        cmd = wire.register_customer(request)

        async def run(conn: AsyncConnection, ctx: wire.EventContext) -> pb.RegisterCustomerResponse:
            customer = await handlers.register_customer(conn, ctx, cmd)
            token = wire.ConsistencyToken("customer", customer.customer_id, customer.version)
            return pb.RegisterCustomerResponse(
                customer_id=customer.customer_id, version=customer.version, consistency_token=token.encode()
            )

        return await self._execute(context, "RegisterCustomer", request, pb.RegisterCustomerResponse, run)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext) -> pb.PlaceOrderResponse:
        cmd = wire.place_order(request)

        async def run(conn: AsyncConnection, ctx: wire.EventContext) -> pb.PlaceOrderResponse:
            order = await handlers.place_order(conn, ctx, cmd)
            token = wire.ConsistencyToken("order", order.order_id, order.version)
            return pb.PlaceOrderResponse(order_id=order.order_id, version=order.version, consistency_token=token.encode())

        return await self._execute(context, "PlaceOrder", request, pb.PlaceOrderResponse, run)

    async def _execute(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        request: Message,
        response_type: type[Resp],
        run: Callable[[AsyncConnection, wire.EventContext], Awaitable[Resp]],
    ) -> Resp:
        """One command, one transaction: claim the request id, run the handler, store the response."""
        request_id: str = getattr(request, "request_id")
        try:
            wire.check_request_id(request_id)
            tenant_id = serving.tenant_of(context)
            _check_tenant(tenant_id)
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
                response = await run(conn, ctx)
                await db.store_response(conn, tenant_id, request_id, response.SerializeToString())
                return response
        except DomainError as exc:
            await errors.abort(context, errors.to_status(exc))
        except DBAPIError as exc:
            log.warning("database error", extra={"method": method, "error": type(exc.orig).__name__})
            if "statement timeout" in str(exc.orig) or "canceling statement" in str(exc.orig):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the command did not finish within the deadline")
            await errors.abort(context, errors.unavailable("the database is unavailable; retry with the same request_id", "DATABASE_UNAVAILABLE"))
        raise AssertionError("unreachable")  # pragma: no cover


def _check_tenant(tenant_id: str) -> None:
    if not (0 < len(tenant_id) <= 64 and tenant_id.replace("-", "").replace("_", "").isalnum()):
        raise InvalidCommandError([FieldViolation(serving.TENANT_KEY, "must be 1-64 letters, digits, - or _")])


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
