"""CommandService: each RPC down its route of the command pipeline; the process's composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import psycopg
import psycopg_pool
from prometheus_client import Gauge
from psycopg_pool import AsyncConnectionPool

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server.command import pipeline
from server.command.group_commit import GroupCommit, Notifier
from server.config import TOKEN_KEY_WARNING, Settings
from server.platform import auth, durability, serving, timeouts

log = logging.getLogger(__name__)

FORGOTTEN = Gauge("orders_customers_forgotten",
                  "Customers whose personal data is erased (ForgetCustomer or `orders forget`), read from the database")
FORGOTTEN_REFRESH_SECONDS = 5.0


async def count_forgotten(pool: AsyncConnectionPool) -> None:
    """Keeps FORGOTTEN current: a count from the database, so forgets by `orders forget` or by
    another command server count too."""
    while True:
        try:
            async with pool.connection(timeout=2) as conn:
                await timeouts.set_timeout(conn, "2000")
                row = await (await conn.execute("SELECT count(*) FROM customers WHERE forgotten_at IS NOT NULL")).fetchone()
                FORGOTTEN.set(row[0] if row else 0)
        except (psycopg.Error, psycopg_pool.PoolTimeout):
            pass  # the database is away: health says so; the gauge keeps its last value
        await asyncio.sleep(FORGOTTEN_REFRESH_SECONDS)


class CommandService(pb_grpc.CommandServiceServicer):
    """Every RPC is its route down the one pipeline."""

    def __init__(self, commands: pipeline.Pipeline) -> None:
        self._run = commands.run

    async def RegisterCustomer(self, request: pb.RegisterCustomerRequest, context: grpc.aio.ServicerContext) -> pb.RegisterCustomerResponse:
        return await self._run(pipeline.REGISTER_CUSTOMER, request, context)

    async def ForgetCustomer(self, request: pb.ForgetCustomerRequest, context: grpc.aio.ServicerContext) -> pb.ForgetCustomerResponse:
        return await self._run(pipeline.FORGET_CUSTOMER, request, context)

    async def ReserveCredit(self, request: pb.ReserveCreditRequest, context: grpc.aio.ServicerContext) -> pb.ReserveCreditResponse:
        return await self._run(pipeline.RESERVE_CREDIT, request, context)

    async def ReleaseCredit(self, request: pb.ReleaseCreditRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseCreditResponse:
        return await self._run(pipeline.RELEASE_CREDIT, request, context)

    async def AddStock(self, request: pb.AddStockRequest, context: grpc.aio.ServicerContext) -> pb.AddStockResponse:
        return await self._run(pipeline.ADD_STOCK, request, context)

    async def ReserveStock(self, request: pb.ReserveStockRequest, context: grpc.aio.ServicerContext) -> pb.ReserveStockResponse:
        return await self._run(pipeline.RESERVE_STOCK, request, context)

    async def ReleaseStock(self, request: pb.ReleaseStockRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseStockResponse:
        return await self._run(pipeline.RELEASE_STOCK, request, context)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext) -> pb.PlaceOrderResponse:
        return await self._run(pipeline.PLACE_ORDER, request, context)

    async def ConfirmOrder(self, request: pb.ConfirmOrderRequest, context: grpc.aio.ServicerContext) -> pb.ConfirmOrderResponse:
        return await self._run(pipeline.CONFIRM_ORDER, request, context)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext) -> pb.CancelOrderResponse:
        return await self._run(pipeline.CANCEL_ORDER, request, context)

    async def ShipOrder(self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext) -> pb.ShipOrderResponse:
        return await self._run(pipeline.SHIP_ORDER, request, context)


def required_scopes() -> dict[str, str]:
    """orders.write for every command but ForgetCustomer, an operator's action (orders.admin)."""
    return serving.required_scopes(pb.DESCRIPTOR.services_by_name["CommandService"], auth.WRITE,
                                   ForgetCustomer=auth.ADMIN)


# The most database connections a command server holds (its pool; the group writers draw on it).
POOL_MAX_SIZE = 20

async def run(settings: Settings) -> None:
    """Composition root of the command-server process."""
    verifier = auth.verifier_from(settings)
    kek = settings.require_kek()
    conninfo = settings.role_database_url("command-server")
    if settings.token_key_generated:
        log.warning(TOKEN_KEY_WARNING)
    pool = AsyncConnectionPool(
        conninfo,
        min_size=4,
        max_size=POOL_MAX_SIZE,
        kwargs={"autocommit": True},
        open=False,
        name="commands",
    )
    await pool.open(wait=False)
    notifier = Notifier(conninfo)
    group = GroupCommit(pool, notifier, slots=settings.group_commit_slots,
                        window=settings.group_commit_window_us / 1e6)
    notifying = asyncio.create_task(notifier.run())
    counting = asyncio.create_task(count_forgotten(pool))

    checked = False

    async def ready() -> bool:
        nonlocal checked
        async with pool.connection(timeout=1) as conn:
            # Commands leave their own deadline's statement_timeout on the pooled connection;
            # the check sets its own rather than inherit a few milliseconds.
            await timeouts.set_timeout(conn, "1000")
            if not checked:
                checked = True  # once, though health checks come in together
                for warning in await durability.database_warnings(conn):
                    log.warning("the database does not keep acknowledged commands through a crash",
                                extra={"setting": warning})
        return True

    try:
        await serving.serve(
            addr=settings.command_addr,
            service_names=[pb.DESCRIPTOR.services_by_name["CommandService"].full_name],
            register=lambda server: pb_grpc.add_CommandServiceServicer_to_server(CommandService(pipeline.Pipeline(group, settings.token_key, kek)), server),
            ready=ready,
            max_request_bytes=settings.max_request_bytes,
            max_calls_in_progress=settings.max_calls_in_progress,
            grace_seconds=settings.grace_seconds,
            scopes=required_scopes(),
            verifier=verifier,
            reflection_on=settings.reflection,
            metrics_addr=settings.metrics_addr,
            tls=settings.tls,
            reuse_port=settings.command_servers > 1,
        )
    finally:
        for task in (notifying, counting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await group.close()
        await pool.close()
