"""The one gRPC server skeleton both servers share: aio server, health, reflection, limits,
clean errors for undecodable requests, every raised error through one table, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace

from server import telemetry
from server.config import TlsFiles
from server.domain.errors import FieldViolation, InvalidArgumentError
from server.platform import auth, errors, process, tenancy
from server.platform.tls import server_credentials, transport_name
from server.telemetry import semconv
from server.telemetry.grpc_metrics import MethodMetrics, rpc_type
from server.telemetry.logs import CAUSATION_ID, CORRELATION_ID

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


class _Wrapping:
    """A layer every call goes through: it wraps each method's handler once, when the method is
    registered (`_Layered`), and the wrapped handler serves every call. (As gRPC interceptors the
    layers cost a chain of coroutines per call, before any of them did its work.)"""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class _Layered:
    """The server as a servicer's generated `add_*_to_server` sees it: each method handler it
    registers is wrapped by `layers`, outermost first, before the real server gets it."""

    def __init__(self, server: grpc.aio.Server, layers: Sequence[_Wrapping]) -> None:
        self._server = server
        self._layers = layers

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for layer in reversed(self._layers):
            handler = layer.wrap(method, handler)
        return handler

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self.wrap(f"/{service}/{name}", handler) for name, handler in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_LayeredGeneric(handler, self) for handler in handlers])


class _LayeredGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type hints
    """A generic handler whose methods are wrapped the first time each is looked up."""

    def __init__(self, handler: grpc.GenericRpcHandler, layered: _Layered) -> None:
        self._handler = handler
        self._layered = layered
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method not in self._wrapped:
            handler = self._handler.service(details)
            self._wrapped[method] = None if handler is None else self._layered.wrap(method, handler)
        return self._wrapped[method]


class RequestGuard(_Wrapping):
    """Requests over the size limit get RESOURCE_EXHAUSTED with ErrorInfo, and bytes that are not
    the request message INVALID_ARGUMENT (grpc.aio alone would answer UNKNOWN), for every method."""

    def __init__(self, max_request_bytes: int) -> None:
        super().__init__()
        self.max_request_bytes = max_request_bytes

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
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

            return handler._replace(request_deserializer=safe, unary_unary=unary_unary)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if request is _UNDECODABLE or request is _OVERSIZE:
                    await reject(request, context)
                async for item in stream(request, context):
                    yield item

            return handler._replace(request_deserializer=safe, unary_stream=unary_stream)
        return handler


# Health checks and reflection are neither observed (ids, metrics) nor traced, nor refused when
# the server is overloaded: a probe must see a busy server as alive.
_UNOBSERVED = (health.SERVICE_NAME, reflection.SERVICE_NAME)

CORRELATION_KEY = "x-correlation-id"
# What caused the call, when the caller says: a process manager's command names the event it
# reacts to (the fulfilment saga does); otherwise a command's cause is its own request_id.
CAUSATION_KEY = "x-causation-id"


# What carries a caller's trace context in metadata (W3C trace context and baggage).
_PROPAGATED = frozenset(("traceparent", "tracestate", "baggage"))
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"


class Observe(_Wrapping):
    """Per call: the server span, as OpenTelemetry's gRPC instrumentation names it (the full
    method) and with its RPC attributes, a child of the caller's trace context (traceparent and
    baggage in the metadata), with the final status code on it and an error status when it is not
    OK; without a tracer provider (tracing off) no span is made, but the caller's trace context
    still becomes the call's. The correlation id (the caller's x-correlation-id, else a new one)
    is echoed in the response metadata (a unary call's trailers, a stream's headers), put on the
    span and in baggage for everything the call does (events, logs, spans), with the causation id
    (the caller's x-causation-id, else the request_id). The outcome is counted and timed for
    Prometheus. Health checks and reflection are not observed."""

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = full_method.lstrip("/").partition("/")
        if service in _UNOBSERVED:
            return handler
        metrics = MethodMetrics.of(rpc_type(handler), service, method)
        attributes = semconv.grpc_method(service, method)

        async def begin(request: Any, context: grpc.aio.ServicerContext, stream: bool) -> tuple[trace.Span, otel_context.Context]:
            """The call's span and the context it runs in: the span current, the ids in baggage."""
            metrics.started.inc()
            metrics.received.inc()  # the one request message (no client streams here)
            metadata = context.invocation_metadata() or ()
            correlation_id = causation_id = None
            parent = None
            for key, value in metadata:
                if key == CORRELATION_KEY:
                    correlation_id = usable_id(value)
                elif key == CAUSATION_KEY:
                    causation_id = usable_id(value)
                elif key in _PROPAGATED and parent is None:
                    parent = telemetry.extract(dict(metadata))
            correlation_id = correlation_id or str(uuid.uuid4())
            causation_id = causation_id or getattr(request, "request_id", "") or correlation_id
            echo = ((CORRELATION_KEY, correlation_id),)
            if stream:
                # A subscriber needs it while the stream is open, not when it ends.
                await context.send_initial_metadata(echo)
            else:
                # The trailers go out with the response and status in one batch; headers sent
                # ahead of the response cost a batch of their own, a measurable share of
                # PlaceOrder's rate. errors.abort keeps them beside its details.
                context.set_trailing_metadata(echo)
            span = telemetry.tracer.start_span(full_method, context=parent, kind=trace.SpanKind.SERVER,
                                               attributes=attributes)
            if span.is_recording():
                span.set_attributes({CORRELATION_ID: correlation_id, CAUSATION_ID: causation_id})
            return span, telemetry.with_ids(trace.set_span_in_context(span, parent), correlation_id, causation_id)

        def end(span: trace.Span, context: grpc.aio.ServicerContext, started: float, failed: BaseException | None) -> None:
            code = outcome(context, failed)
            metrics.handled[code].inc()
            metrics.handling.observe(time.perf_counter() - started)
            if span.is_recording():
                span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
                if code != grpc.StatusCode.OK:
                    span.set_status(trace.StatusCode.ERROR, code.name)
            span.end()

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                span, ctx = await begin(request, context, stream=False)
                token = otel_context.attach(ctx)
                failed: BaseException | None = None
                try:
                    response = await unary(request, context)
                    metrics.sent.inc()
                    return response
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    otel_context.detach(token)
                    end(span, context, started, failed)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                span, ctx = await begin(request, context, stream=True)
                failed: BaseException | None = None
                responses = stream(request, context)
                try:
                    while True:
                        # The span and the ids are in the context for each step, never across a
                        # yield: gRPC does not close this generator when its call ends mid-send,
                        # and a context attached across a yield could not be detached when the
                        # event loop closes it later, in another task.
                        token = otel_context.attach(ctx)
                        try:
                            item = await anext(responses)
                        except StopAsyncIteration:
                            break
                        finally:
                            otel_context.detach(token)
                        metrics.sent.inc()
                        yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    await responses.aclose()
                    end(span, context, started, failed)

            return handler._replace(unary_stream=unary_stream)
        return handler


def outcome(context: grpc.aio.ServicerContext, failed: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with. A call its client cancelled, or whose deadline passed, ends
    its handler with CancelledError and no code set: Canceled or DeadlineExceeded, as grpc-go
    counts them, not Unknown."""
    if failed is None:
        return grpc.StatusCode.OK
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(failed, asyncio.CancelledError):
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class Admission(_Wrapping):
    """Overload protection: at most `limit` unary calls in progress. A call beyond it is refused
    at once, before any work, with RESOURCE_EXHAUSTED, ErrorInfo(reason="OVERLOADED") and
    RetryInfo: admitted calls queue for the database only behind a bounded number of others, and
    callers learn to back off (a command retried with the same request_id is applied once).

    It sees only the calls the server has picked up. Offered far more than it can serve, the
    event loop falls behind picking them up, and gRPC cancels calls waiting longest to be picked
    up (CANCELLED, without details). Streams (WatchOrders) are long-lived and have limits of
    their own; health checks and reflection always answer."""

    RETRY_DELAY_SECONDS = 0.1

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.in_progress = 0
        status = errors.overloaded(f"the server is at its limit of {limit} calls in progress; retry shortly",
                                   limit, self.RETRY_DELAY_SECONDS)
        st = rpc_status.to_status(status)
        self._refusal = (st.code, st.details, tuple(st.trailing_metadata))

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = full_method.lstrip("/").partition("/")
        if service in _UNOBSERVED or handler.unary_unary is None:
            return handler
        unary = handler.unary_unary
        # Refused before Observe sees the call: counted here as started, received and handled.
        metrics = MethodMetrics.of(rpc_type(handler), service, method)
        refused = metrics.handled[grpc.StatusCode.RESOURCE_EXHAUSTED]
        code, message, details = self._refusal

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_progress >= self.limit:
                metrics.started.inc()
                metrics.received.inc()
                refused.inc()
                correlation_id = caller_correlation_id(context)
                echo = ((CORRELATION_KEY, correlation_id),) if correlation_id else ()
                await context.abort(code, message, (*echo, *details))
            self.in_progress += 1
            try:
                return await unary(request, context)
            finally:
                self.in_progress -= 1

        return handler._replace(unary_unary=unary_unary)


class ClosedStreams(_Wrapping):
    """Streams end in their own call's task: a streaming handler's responses are written by a
    coroutine that closes the response generators, however the call ends.

    gRPC drives an async-generator handler without closing it: a call cancelled while a response
    is being sent (a client that stopped reading, then went away) leaves the generators suspended
    at a yield, to be closed later by the event loop's finaliser in another task. Their exits (the
    server span's, the ids' in baggage) then detach OpenTelemetry contexts that belong to the
    dead call: a "Failed to detach context" error per stream, and spans that end only when the
    event loop gets to them."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_stream is None:
            return handler
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> None:
            responses = stream(request, context)
            try:
                async for response in responses:
                    await context.write(response)
            finally:
                await responses.aclose()

        return handler._replace(unary_stream=unary_stream)


# The caller a call's task runs for; set by Authenticate before the handler starts. Each call has
# a task (and so a context) of its own: nothing leaks from one call to the next.
_CALLER: contextvars.ContextVar[auth.Principal | None] = contextvars.ContextVar("orders_caller", default=None)
AUTHORIZATION_KEY = "authorization"


class Authenticate(_Wrapping):
    """Every call but health checks and reflection names its caller before its handler runs: a
    bearer token `verifier` accepts, holding the scope `scopes` gives the method; a method not in
    `scopes` is refused to everyone. An x-tenant-id header that disagrees with the token's tenant
    is PERMISSION_DENIED, unless the token holds `orders.any_tenant` (a service such as the saga,
    acting for the tenant the header names). Without a verifier (ORDERS_AUTH=off) every caller is the anonymous actor
    of the tenant its x-tenant-id header names, with every scope."""

    def __init__(self, verifier: auth.Verifier | None, scopes: dict[str, str]) -> None:
        super().__init__()
        self.verifier = verifier
        self.scopes = scopes

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = full_method.lstrip("/").partition("/")
        if service in _UNOBSERVED:
            return handler
        scope = self.scopes.get(full_method)

        async def admit(context: grpc.aio.ServicerContext) -> None:
            try:
                _CALLER.set(await self._caller(context, scope))
            except (auth.UnauthenticatedError, auth.PermissionDeniedError, InvalidArgumentError) as exc:
                # Never the token, nor who it names: the reason is enough to act on.
                log.info("call refused", extra={"method": method, "reason": getattr(exc, "reason", "INVALID_TENANT")})
                await errors.abort(context, errors.status_of(exc))

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                return await unary(request, context)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                responses = stream(request, context)
                try:
                    async for item in responses:
                        yield item
                finally:
                    await responses.aclose()  # in this task, as every layer does (see ClosedStreams)

            return handler._replace(unary_stream=unary_stream)
        return handler

    async def _caller(self, context: grpc.aio.ServicerContext, scope: str | None) -> auth.Principal:
        authorization = header_tenant = None
        for key, value in context.invocation_metadata() or ():
            if key == AUTHORIZATION_KEY:
                authorization = str(value)
            elif key == TENANT_KEY:
                header_tenant = str(value)
        if self.verifier is None:
            tenant_id = header_tenant or DEFAULT_TENANT
            if violations := tenant_violations(tenant_id):
                raise InvalidArgumentError(violations)
            return auth.Principal(ANONYMOUS, tenant_id, frozenset(auth.SCOPES), float("inf"))
        caller = await self.verifier.principal(authorization)
        if scope is None:
            raise auth.PermissionDeniedError("METHOD_NOT_ALLOWED", "no scope allows this method")
        caller.require(scope)
        if header_tenant is not None and header_tenant != caller.tenant_id:
            if auth.ANY_TENANT in caller.scopes:
                if violations := tenant_violations(header_tenant):
                    raise InvalidArgumentError(violations)
                return dataclasses.replace(caller, tenant_id=header_tenant)
            raise auth.PermissionDeniedError(
                "TENANT_MISMATCH", "the x-tenant-id header names another tenant than the bearer token; "
                                   "drop the header (the token says which tenant) or use that tenant's token")
        return caller


ANONYMOUS = "anonymous"


def required_scopes(service: Any, scope: str, **overrides: str) -> dict[str, str]:
    """Full method name -> scope for every method of a service descriptor: `scope`, or the
    override named after the method (e.g. ForgetCustomer=auth.ADMIN)."""
    return {f"/{service.full_name}/{m.name}": overrides.get(m.name, scope) for m in service.methods}


class ErrorMapping(_Wrapping):
    """Whatever a method raises ends its call with the status `errors.status_of` gives it: the one
    place both servers turn exceptions into statuses. Rejections are logged at info, failures of
    the database or the deadline as warnings, anything unexpected once with its stack."""

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = full_method.lstrip("/").partition("/")
        if service in _UNOBSERVED:
            return handler

        async def fail(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            status = errors.status_of(exc)
            fields = {"method": method, "code": code_pb2.Code.Name(status.code), "error": type(exc).__name__}
            if status.code == code_pb2.INTERNAL:
                log.error("call failed unexpectedly", extra=fields, exc_info=exc)
            elif status.code in _RETRYABLE:
                log.warning("call failed", extra=fields)
            else:
                log.info("call rejected", extra=fields)
            await errors.abort(context, status)

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await unary(request, context)
                except grpc.aio.BaseError:  # gRPC's own: an abort on its way, or a call gone from under us
                    raise
                except Exception as exc:
                    await fail(context, exc)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                responses = stream(request, context)
                try:
                    async for item in responses:
                        yield item
                except grpc.aio.BaseError:  # e.g. the status of a stream whose client has gone
                    raise
                except Exception as exc:
                    await fail(context, exc)
                finally:
                    await responses.aclose()

            return handler._replace(unary_stream=unary_stream)
        return handler


_RETRYABLE = (code_pb2.UNAVAILABLE, code_pb2.DEADLINE_EXCEEDED)


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's tenant: its token's `tenant_id` (with authentication off, the x-tenant-id
    header), as `Authenticate` admitted the call."""
    return _caller(context).tenant_id


def actor_of(context: grpc.aio.ServicerContext) -> str:
    """Who the caller is: its token's subject, recorded on the events its call writes."""
    return _caller(context).subject


def _caller(context: grpc.aio.ServicerContext) -> auth.Principal:
    caller = _CALLER.get()
    if caller is None:
        raise RuntimeError("a call reached its handler without Authenticate admitting it")
    return caller


def tenant_violations(tenant_id: str) -> list[FieldViolation]:
    """What is wrong with an x-tenant-id header's tenant (authentication off: it names the tenant)."""
    if tenancy.is_valid(tenant_id):
        return []
    return [FieldViolation(TENANT_KEY, f"metadata must be {tenancy.RULE}")]


def caller_correlation_id(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's x-correlation-id, when it sent a usable one (printable, at most 128 characters)."""
    for key, value in context.invocation_metadata() or ():
        if key == CORRELATION_KEY:
            return usable_id(value)
    return None


def usable_id(value: str | bytes | None) -> str | None:
    """An id from metadata, when usable (printable, at most 128 characters)."""
    if not value or isinstance(value, bytes):
        return None
    return value if len(value) <= 128 and value.isprintable() else None


async def serve(
    *,
    addr: str,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    ready: Callable[[], Awaitable[bool]],
    max_request_bytes: int,
    grace_seconds: float,
    scopes: dict[str, str],
    verifier: auth.Verifier | None,
    reflection_on: bool = True,
    metrics_addr: str | None = None,
    max_calls_in_progress: int = 0,
    before_stop: Callable[[], Awaitable[None]] | None = None,
    options: Sequence[tuple[str, Any]] = (),
    tls: TlsFiles | None = None,
    reuse_port: bool = False,
) -> None:
    """Runs a server until SIGTERM/SIGINT. Health stays NOT_SERVING while `ready()` is false.
    With `reuse_port`, other processes may listen on the same address (SO_REUSEPORT).
    `max_calls_in_progress` (0: no limit) bounds the unary calls in progress (`Admission`).
    Every call needs a token `verifier` accepts with the scope `scopes` names for its method
    (no verifier: authentication off). With `tls`, the one port speaks only TLS (mutual TLS with a
    client CA), health and reflection included; the certificate files are read here, once."""
    # Outermost first: streams closed in their task, admission (a refusal costs as little as it
    # can), the server span, then the correlation id and metrics, then who is calling, then input
    # checks, then the error table (inside the ids, so its log lines carry them).
    admission = [Admission(max_calls_in_progress)] if max_calls_in_progress > 0 else []
    layers = [ClosedStreams(), *admission, Observe(), Authenticate(verifier, scopes),
              RequestGuard(max_request_bytes), ErrorMapping()]
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max(TRANSPORT_LIMIT_BYTES, max_request_bytes)),
            # Off unless asked: a second server started by mistake on a taken port fails, rather
            # than silently sharing it. ORDERS_COMMAND_SERVERS or ORDERS_QUERY_SERVERS > 1 asks (one port,
            # N processes).
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *options,
        ],
    )
    layered = _Layered(server, layers)
    register(layered)  # all that the generated add_*_to_server uses of a server
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, layered)
    if reflection_on:
        reflection.enable_server_reflection((*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), layered)
    if tls is None:
        port = server.add_insecure_port(addr)
    else:
        port = server.add_secure_port(addr, server_credentials(tls))
    if port == 0:
        raise SystemExit(f"cannot listen on {addr}")

    async def set_health(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *service_names):
            await health_servicer.set(name, status)

    await set_health(False)
    telemetry.serve_metrics(metrics_addr)
    await server.start()
    # Objects that outlive a few collections (requests in flight) reach the oldest generation,
    # whose collections would otherwise scan the whole start-up heap each time.
    process.freeze_heap()
    log.info("listening", extra={"addr": addr, "transport": transport_name(tls)})
    if verifier is None:
        log.warning("AUTHENTICATION IS OFF (ORDERS_AUTH=off): anyone who reaches this port may call every method "
                    "as any tenant it names in x-tenant-id; for local experiments only", extra={"addr": addr})

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
