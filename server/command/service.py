"""CommandService: translate the request, run its handler (a read, then one atomic write of the
change, its event and the idempotency record), translate back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
from google.protobuf.message import Message
from opentelemetry import trace
from psycopg_pool import AsyncConnectionPool

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server import telemetry
from server.command import handlers, store
from server.config import Settings
from server.domain.errors import InvalidCommandError, RequestIdReusedError
from server.platform import errors, serving, wire
from server.platform.schema import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 10.0
MIN_USEFUL_SECONDS = 0.005

# Each command's response from what it wrote: the aggregate's id, its new version, and the
# consistency token a query can wait on.
Reply = Callable[[str, int, str], Message]
REPLIES: dict[str, Reply] = {
    "RegisterCustomer": lambda id_, version, token: pb.RegisterCustomerResponse(
        customer_id=id_, version=version, consistency_token=token),
    "ReserveCredit": lambda id_, version, token: pb.ReserveCreditResponse(
        customer_id=id_, version=version, consistency_token=token),
    "ReleaseCredit": lambda id_, version, token: pb.ReleaseCreditResponse(
        customer_id=id_, version=version, consistency_token=token),
    "AddStock": lambda id_, version, token: pb.AddStockResponse(product_id=id_, version=version, consistency_token=token),
    "ReserveStock": lambda id_, version, token: pb.ReserveStockResponse(
        product_id=id_, version=version, consistency_token=token),
    "ReleaseStock": lambda id_, version, token: pb.ReleaseStockResponse(
        product_id=id_, version=version, consistency_token=token),
    "PlaceOrder": lambda id_, version, token: pb.PlaceOrderResponse(order_id=id_, version=version, consistency_token=token),
    "ConfirmOrder": lambda id_, version, token: pb.ConfirmOrderResponse(
        order_id=id_, version=version, consistency_token=token),
    "CancelOrder": lambda id_, version, token: pb.CancelOrderResponse(order_id=id_, version=version, consistency_token=token),
    "ShipOrder": lambda id_, version, token: pb.ShipOrderResponse(order_id=id_, version=version, consistency_token=token),
}


class Notifier:
    """Wakes the relay after commits: one NOTIFY, at most every NOTIFY_INTERVAL, for however many
    commits happened meanwhile.

    Kept out of the commands' transactions, where NOTIFY would serialise every commit behind one
    lock. If this process dies between a commit and its NOTIFY, the relay's poll finds the event.
    """

    NOTIFY_INTERVAL = 0.002

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._pending = asyncio.Event()

    def poke(self) -> None:
        self._pending.set()

    async def run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await self._pending.wait()
                self._pending.clear()
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
                except psycopg.Error:
                    conn = None
                    await asyncio.sleep(0.5)
                await asyncio.sleep(self.NOTIFY_INTERVAL)
        finally:
            if conn is not None:
                await conn.close()


class CommandService(pb_grpc.CommandServiceServicer):
    """Every RPC is the same pipeline; the request's type picks the command and its handler."""

    def __init__(self, pool: AsyncConnectionPool, notifier: Notifier) -> None:
        self._pool = pool
        self._notifier = notifier

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
        return await self._run(type(request).__name__.removesuffix("Request"), request, context)

    async def _run(self, method: str, request: Message, context: grpc.aio.ServicerContext) -> Message:
        """One command: read the aggregate (and any earlier use of the request id), decide, then
        write the claim with its response, the change and the event in one statement."""
        response_type: type[Message] = getattr(pb, f"{method}Response")
        request_id: str = request.request_id  # type: ignore[attr-defined]  # every command request has one
        cmd = wire.to_command(request)
        tenant_id = serving.tenant_of(context)
        violations = wire.request_id_violations(request_id) + serving.tenant_violations(tenant_id) + cmd.violations()
        if violations:
            raise InvalidCommandError(violations)
        ctx = wire.EventContext(
            tenant_id=tenant_id,
            correlation_id=telemetry.correlation_id() or str(uuid.uuid4()),
            causation_id=request_id,
        )
        digest = wire.request_hash(method, request)
        remaining = context.time_remaining()
        budget = DEFAULT_DEADLINE_SECONDS if remaining is None else remaining
        if budget < MIN_USEFUL_SECONDS:
            raise errors.DeadlineExceededError("too little time left to run the command")
        async with self._pool.connection(timeout=budget) as conn:
            session = store.Session(conn, tenant_id, request_id, method, digest, timeout_ms=budget * 1000)
            try:
                written = await handlers.HANDLERS[type(cmd)](session, ctx, cmd)
                token = wire.ConsistencyToken(written.aggregate_type, written.aggregate_id, written.version)
                response = REPLIES[method](written.aggregate_id, written.version, token.encode())
                await session.commit(response.SerializeToString())
                # On the call's own server span: a span of its own per command cost more than
                # it told (the database spans below it already time the work).
                trace.get_current_span().set_attributes({
                    "orders.aggregate_type": written.aggregate_type,
                    "orders.aggregate_id": written.aggregate_id,
                    "orders.aggregate_version": written.version,
                })
                log.info("command applied", extra={
                    "method": method, "aggregate_type": written.aggregate_type,
                    "aggregate_id": written.aggregate_id, "aggregate_version": written.version})
            except store.Replayed as replay:
                prior = replay.prior or await store.prior_request(conn, tenant_id, request_id)
                if prior is None or (prior.method, prior.request_hash) != (method, digest) or prior.response is None:
                    raise RequestIdReusedError(request_id) from None
                return response_type.FromString(prior.response)
        self._notifier.poke()
        return response


async def run(settings: Settings) -> None:
    """Composition root of the command-server process."""
    conninfo = settings.require_database_url()
    pool = AsyncConnectionPool(
        conninfo,
        min_size=4,
        max_size=20,
        kwargs={"autocommit": True},
        open=False,
        name="commands",
    )
    await pool.open(wait=False)
    notifier = Notifier(conninfo)
    notifying = asyncio.create_task(notifier.run())

    async def ready() -> bool:
        async with pool.connection(timeout=1) as conn:
            # Commands leave their own deadline's statement_timeout on the pooled connection;
            # the check sets its own rather than inherit a few milliseconds.
            await store.set_timeout(conn, "1000")
        return True

    try:
        await serving.serve(
            addr=settings.command_addr,
            service_names=[pb.DESCRIPTOR.services_by_name["CommandService"].full_name],
            register=lambda server: pb_grpc.add_CommandServiceServicer_to_server(CommandService(pool, notifier), server),
            ready=ready,
            max_request_bytes=settings.max_request_bytes,
            max_calls_in_progress=settings.max_calls_in_progress,
            grace_seconds=settings.grace_seconds,
            metrics_addr=settings.metrics_addr,
        )
    finally:
        notifying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await notifying
        await pool.close()
