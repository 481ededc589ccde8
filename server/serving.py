"""The one gRPC server skeleton both servers share: aio server, health, reflection, limits,
clean errors for undecodable requests, and a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server import errors

log = logging.getLogger(__name__)

_UNDECODABLE = object()
_OVERSIZE = object()
# gRPC itself refuses anything larger, without details; below it, RequestGuard answers with them.
TRANSPORT_LIMIT_BYTES = 4 * 1024 * 1024
TENANT_KEY = "x-tenant-id"
DEFAULT_TENANT = "default"
# Long-lived streams (WatchOrders): ping idle connections so proxies and dead peers are noticed,
# and accept client pings every 10 s or slower (faster ones get GOAWAY too_many_pings).
STREAM_KEEPALIVE: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)


class RequestGuard(grpc.aio.ServerInterceptor):
    """Requests over the size limit get RESOURCE_EXHAUSTED with ErrorInfo, and bytes that are not
    the request message INVALID_ARGUMENT (grpc.aio alone would answer UNKNOWN), for every method."""

    def __init__(self, max_request_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        deserialize = handler.request_deserializer

        limit = self.max_request_bytes

        def safe(data: bytes) -> Any:
            if len(data) > limit:
                return _OVERSIZE
            try:
                return deserialize(data)
            except (DecodeError, ValueError, RuntimeError):
                return _UNDECODABLE

        async def reject(request: Any, context: grpc.aio.ServicerContext) -> None:
            if request is _OVERSIZE:
                await errors.abort(
                    context,
                    errors.resource_exhausted(f"the request is larger than {limit} bytes", "REQUEST_TOO_LARGE", limit=str(limit)),
                )
            await errors.abort(context, errors.invalid("the request is not a valid protobuf message", "UNDECODABLE_REQUEST"))

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if request is _UNDECODABLE or request is _OVERSIZE:
                    await reject(request, context)
                return await unary(request, context)

            return handler._replace(request_deserializer=safe, unary_unary=unary_unary)  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if request is _UNDECODABLE or request is _OVERSIZE:
                    await reject(request, context)
                async for item in stream(request, context):
                    yield item

            return handler._replace(request_deserializer=safe, unary_stream=unary_stream)  # type: ignore[attr-defined,no-any-return]
        return handler


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_KEY and value:
            return str(value)
    return DEFAULT_TENANT


def metadata_value(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)
    return None


async def serve(
    *,
    addr: str,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    ready: Callable[[], Awaitable[bool]],
    max_request_bytes: int,
    grace_seconds: float,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    before_stop: Callable[[], Awaitable[None]] | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> None:
    """Runs a server until SIGTERM/SIGINT. Health stays NOT_SERVING while `ready()` is false."""
    server = grpc.aio.server(
        interceptors=[RequestGuard(max_request_bytes), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max(TRANSPORT_LIMIT_BYTES, max_request_bytes)),
            ("grpc.so_reuseport", 0),
            *options,
        ],
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(addr)
    if port == 0:
        raise SystemExit(f"cannot listen on {addr}")

    async def set_health(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *service_names):
            await health_servicer.set(name, status)

    await set_health(False)
    await server.start()
    log.info("listening", extra={"addr": addr})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_readiness() -> None:
        serving: bool | None = None
        while True:
            try:
                now = await asyncio.wait_for(ready(), timeout=2)
            except Exception:  # any failure to answer means not ready
                now = False
            if now != serving:
                await set_health(now)
                log.info("health changed", extra={"serving": now})
                serving = now
            await asyncio.sleep(0.2 if not now else 1.0)

    watcher = asyncio.create_task(watch_readiness())
    await stop.wait()
    log.info("stopping")
    watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    if before_stop is not None:
        # stop(grace) would cancel open streams; this lets them end with a resumable status.
        await before_stop()
    await server.stop(grace_seconds)
