"""QueryService: reads the projector's read models; never touches the write side."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
import psycopg
from google.protobuf import timestamp_pb2
from opentelemetry.trace import SpanKind
from psycopg_pool import AsyncConnectionPool

from orders.v1 import query_service_pb2 as pb
from orders.v1 import query_service_pb2_grpc as pb_grpc
from orders.v1 import types_pb2
from projector.views import customer_credit, customer_orders, order_summaries, product_sales, product_stock
from server import telemetry
from server.config import TOKEN_KEY_WARNING, Settings
from server.domain.commands import id_violations
from server.domain.errors import FieldViolation, InvalidArgumentError, NotFoundError
from server.platform import auth, errors, messaging, serving, timeouts, tokens, wire
from server.platform import schema as db
from server.query import store as read_store
from server.query.watch import Hub, StreamLimits, Watcher
from server.telemetry import semconv

T = TypeVar("T")
log = logging.getLogger(__name__)

# Leave this much of the caller's deadline to answer "not caught up yet" instead of timing out.
ANSWER_MARGIN_SECONDS = 0.05
# A read's statements end within this share of the time left to its call (a step of it, see
# platform.timeouts), so the server answers DEADLINE_EXCEEDED itself and frees the connection;
# a call without a deadline gets NO_DEADLINE_SECONDS.
STATEMENT_SHARE = 0.9
NO_DEADLINE_SECONDS = 30.0
APPLICATION_NAME = "orders-query-server"  # its connections in pg_stat_activity
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Rows per catch-up read of a watcher; a long backlog is read in pages of this size.
WATCH_BATCH = 200
# The documented answer to a stream ended by shutdown: resume with the last token.
SHUTTING_DOWN = "SHUTTING_DOWN"
# The documented answer to a stream over ORDERS_WATCH_MAX_PER_CONNECTION or _PER_TENANT.
WATCH_LIMIT = "WATCH_LIMIT"
STATE_NAMES = {v: types_pb2.OrderState.Name(v).removeprefix("ORDER_STATE_") for v in types_pb2.OrderState.values()}
STATE_NUMBERS = {name: cast(types_pb2.OrderState, v) for v, name in STATE_NAMES.items()}


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _money(currency_code: str, amount: Any) -> types_pb2.Money:
    return wire.money_to_proto(db.from_decimal(currency_code, amount))


def summary_to_proto(row: order_summaries.Summary) -> pb.OrderSummary:
    summary = pb.OrderSummary(
        order_id=row.order_id,
        customer_id=row.customer_id,
        total=_money(row.currency_code, row.total),
        state=STATE_NUMBERS[row.state],
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
        update_time=_timestamp(row.updated_at),
        saga_state=cast(pb.SagaState, pb.SagaState.Value(f"SAGA_STATE_{row.saga_state}") if row.saga_state else 0),
    )
    if row.state == "CANCELLED":
        summary.cancellation.CopyFrom(pb.OrderCancellation(
            reason=cast(types_pb2.CancellationReason, order_summaries.reason_number(row.cancellation_reason)),
            note=row.cancellation_note,
        ))
    return summary


def customer_to_proto(row: customer_credit.Credit) -> pb.Customer:
    return pb.Customer(
        customer_id=row.customer_id,
        credit_limit=_money(row.currency_code, row.credit_limit),
        credit_reserved=_money(row.currency_code, row.credit_reserved),
        credit_available=_money(row.currency_code, row.credit_available),
        version=row.version,
        update_time=_timestamp(row.updated_at),
    )


def product_to_proto(row: product_stock.Stock) -> pb.Product:
    return pb.Product(
        product_id=row.product_id,
        on_hand=row.on_hand,
        reserved=row.reserved,
        available=row.available,
        version=row.version,
        update_time=_timestamp(row.updated_at),
    )


def _optional_id(field: str, value: str) -> list[FieldViolation]:
    return id_violations(field, value) if value else []


def _check(*violations: list[FieldViolation]) -> None:
    found = [v for group in violations for v in group]
    if found:
        raise InvalidArgumentError(found)


class QueryService(pb_grpc.QueryServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, hub: Hub, settings: Settings) -> None:
        self._pool = pool
        self._hub = hub
        self._settings = settings
        self._key = settings.token_key
        self._streams = StreamLimits(settings.watch_max_per_connection, settings.watch_max_per_tenant)
        # Whether the pool reads a streaming replica (pg_is_in_recovery), learnt on first need.
        self._replica: bool | None = None

    # --- unary reads ---------------------------------------------------------------------------

    async def GetOrderSummary(
        self, request: pb.GetOrderSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderSummaryResponse:
        async def read(tenant_id: str) -> pb.GetOrderSummaryResponse:
            row = await self._one(context, tenant_id, request.consistency_token, "order", "order_id",
                                  request.order_id, order_summaries.order_summary)
            return pb.GetOrderSummaryResponse(summary=summary_to_proto(row))

        return await self._answer(context, read)

    async def ListOrders(self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext) -> pb.ListOrdersResponse:
        async def read(tenant_id: str) -> pb.ListOrdersResponse:
            state_ok = request.state in STATE_NAMES
            _check(
                _optional_id("customer_id", request.customer_id),
                [] if state_ok else [FieldViolation("state", "is not an OrderState value")],
                [] if request.page_size >= 0 else [FieldViolation("page_size", "must not be negative")],
            )
            state = "" if request.state == types_pb2.ORDER_STATE_UNSPECIFIED else STATE_NAMES[request.state]
            # The token is bound to the filter (and tenant): another filter cannot reuse it.
            filter_ = {"tenant_id": tenant_id, "customer_id": request.customer_id, "state": state}
            after = ""
            if request.page_token:
                after = str(tokens.verify(self._key, request.page_token, "page", filter_, "page_token")["after"])
            size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            rows = await self._read(context, tenant_id, request.consistency_token,
                                    order_summaries.list_orders, request.customer_id, state, after, size + 1)
            response = pb.ListOrdersResponse(orders=[summary_to_proto(r) for r in rows[:size]])
            if len(rows) > size:
                response.next_page_token = tokens.sign(self._key, "page", filter_, after=rows[size - 1].order_id)
            return response

        return await self._answer(context, read)

    async def GetCustomerOrders(
        self, request: pb.GetCustomerOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCustomerOrdersResponse:
        async def read(tenant_id: str) -> pb.GetCustomerOrdersResponse:
            _check(id_violations("customer_id", request.customer_id))
            dashboard = await self._read(context, tenant_id, request.consistency_token,
                                         customer_orders.read, request.customer_id)
            response = pb.GetCustomerOrdersResponse(
                customer_id=request.customer_id,
                totals=[
                    pb.OrderStateTotal(
                        state=STATE_NUMBERS[r.state],
                        order_count=r.order_count,
                        total=_money(r.currency_code, r.total),
                    )
                    for r in dashboard.totals
                ],
            )
            if dashboard.last_order_at is not None:
                response.last_order_time.CopyFrom(_timestamp(dashboard.last_order_at))
            return response

        return await self._answer(context, read)

    async def GetProductSales(
        self, request: pb.GetProductSalesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProductSalesResponse:
        async def read(tenant_id: str) -> pb.GetProductSalesResponse:
            _check(_optional_id("product_id", request.product_id))
            rows = await self._read(context, tenant_id, request.consistency_token,
                                    product_sales.read, request.product_id)
            return pb.GetProductSalesResponse(
                sales=[
                    pb.ProductSales(product_id=r.product_id, units_sold=r.units_sold, revenue=_money(r.currency_code, r.revenue))
                    for r in rows
                ]
            )

        return await self._answer(context, read)

    async def GetCustomer(self, request: pb.GetCustomerRequest, context: grpc.aio.ServicerContext) -> pb.GetCustomerResponse:
        async def read(tenant_id: str) -> pb.GetCustomerResponse:
            row = await self._one(context, tenant_id, request.consistency_token, "customer", "customer_id",
                                  request.customer_id, customer_credit.read)
            return pb.GetCustomerResponse(customer=customer_to_proto(row))

        return await self._answer(context, read)

    async def GetProduct(self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext) -> pb.GetProductResponse:
        async def read(tenant_id: str) -> pb.GetProductResponse:
            row = await self._one(context, tenant_id, request.consistency_token, "product", "product_id",
                                  request.product_id, product_stock.read)
            return pb.GetProductResponse(product=product_to_proto(row))

        return await self._answer(context, read)

    # --- WatchOrders ---------------------------------------------------------------------------

    async def WatchOrders(
        self, request: pb.WatchOrdersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchOrdersResponse]:
        tenant_id = serving.tenant_of(context)
        filter_ = order_summaries.WatchFilter(request.order_id, request.customer_id)
        bound = {"tenant_id": tenant_id, **filter_.as_dict()}
        _check(
            _optional_id("order_id", request.order_id),
            _optional_id("customer_id", request.customer_id),
            [FieldViolation("customer_id", "set order_id or customer_id, not both")]
            if request.order_id and request.customer_id else [],
        )
        last = 0
        if request.resume_token:
            last = int(tokens.verify(self._key, request.resume_token, "resume", bound, "resume_token")["s"])

        def resume_token() -> str:
            return tokens.sign(self._key, "resume", bound, s=last)

        peer = context.peer()
        full = self._streams.take(peer, tenant_id)
        if full is not None:
            limit, value = full
            await errors.abort(context, errors.resource_exhausted(
                f"too many WatchOrders streams open {limit.replace('_', ' ')} (at most {value}); "
                "close one, or open it on another connection", WATCH_LIMIT, limit=limit, max_streams=str(value)))
        watcher = Watcher(tenant_id, request.order_id, request.customer_id)
        # Registered before the first read, so a change committed during it still wakes us.
        self._hub.add(watcher)
        heartbeat = self._settings.watch_heartbeat_seconds
        # The first heartbeat goes out as soon as the initial state is sent: it marks "caught up".
        next_beat = time.monotonic()
        try:
            while True:
                watcher.wake.clear()
                noticed, watcher.versions = watcher.versions, {}
                while True:  # catch up from the last delivered change_seq
                    try:
                        if noticed:
                            await self._until_replayed(context, tenant_id, noticed, until=next_beat)
                            noticed = {}
                        async with self._connection(context, wait=heartbeat) as conn:
                            rows = await order_summaries.changes_since(conn, tenant_id, filter_, last, WATCH_BATCH)
                    except psycopg.OperationalError as exc:
                        # The table's status, with where to resume (the serving layer could not know).
                        await errors.abort(context, errors.status_of(exc, resume_token=resume_token()))
                    for row in rows:
                        last = row.change_seq
                        span = _push_span(watcher, row)
                        try:
                            yield pb.WatchOrdersResponse(
                                update=pb.OrderUpdate(summary=summary_to_proto(row), resume_token=resume_token())
                            )
                        finally:
                            span.end()
                    if rows and next_beat > time.monotonic():
                        next_beat = time.monotonic() + heartbeat
                    if len(rows) < WATCH_BATCH:
                        break
                if self._hub.closing:
                    await errors.abort(
                        context,
                        errors.unavailable(
                            "the server is shutting down; call again with the last resume_token",
                            SHUTTING_DOWN,
                            resume_token=resume_token(),
                        ),
                    )
                wait = next_beat - time.monotonic()
                if wait <= 0:
                    next_beat = time.monotonic() + heartbeat
                    yield pb.WatchOrdersResponse(
                        heartbeat=pb.WatchHeartbeat(send_time=_timestamp(dt.datetime.now(dt.UTC)),
                                                    resume_token=resume_token())
                    )
                    continue
                # A notice wakes us early; without one (lost, or none sent) the timer re-checks.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.wake.wait(), wait)
        finally:
            self._hub.remove(watcher)
            self._streams.give_back(peer, tenant_id)

    async def _until_replayed(self, context: grpc.aio.ServicerContext, tenant_id: str, noticed: dict[str, int],
                              until: float) -> None:
        """On a streaming replica a notice can arrive before the replica has replayed the change it
        announces, and a read then would not see it until the next heartbeat: wait (polling, with
        growing pauses) until the replica has every noticed version, or until `until`. The rows
        come in change_seq order either way, so waiting only hastens an update, never reorders or
        loses one; on a primary the notice comes after the commit and nothing waits."""
        pause = 0.002
        while self._replica is not False:
            async with self._connection(context) as conn:
                if self._replica is None:
                    self._replica = await read_store.in_recovery(conn)
                if not self._replica:
                    return
                noticed = await read_store.orders_behind(conn, tenant_id, noticed)
            if not noticed or time.monotonic() + pause > until:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    # --- shared --------------------------------------------------------------------------------

    async def _answer(self, context: grpc.aio.ServicerContext, read: Callable[[str], Awaitable[T]]) -> T:
        """`read(tenant_id)`; what it raises, the serving layer's error table answers."""
        tenant_id = serving.tenant_of(context)
        try:
            return await read(tenant_id)
        except (psycopg.errors.UndefinedTable, psycopg.errors.FeatureNotSupported):
            # A read model swapped in under this query (orders swap): read the new table.
            return await read(tenant_id)

    async def _one(self, context: grpc.aio.ServicerContext, tenant_id: str, consistency_token: str, kind: str,
                   id_field: str, id_value: str, query: Callable[..., Awaitable[T | None]]) -> T:
        """The row `query(conn, tenant_id, id_value)` finds, once the read models include the
        token's write: INVALID_ARGUMENT for a malformed id, NOT_FOUND for none (another tenant's
        included)."""
        _check(id_violations(id_field, id_value))
        row = await self._read(context, tenant_id, consistency_token, query, id_value)
        if row is None:
            raise NotFoundError(kind, id_value)
        return row

    async def _read(self, context: grpc.aio.ServicerContext, tenant_id: str, consistency_token: str,
                    query: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`query(conn, tenant_id, *args)` once the read models include the token's write."""
        await self._wait_for(context, tenant_id, consistency_token)
        async with self._connection(context) as conn:
            return await query(conn, tenant_id, *args)

    @contextlib.asynccontextmanager
    async def _connection(self, context: grpc.aio.ServicerContext,
                          wait: float | None = None) -> AsyncIterator[read_store.Connection]:
        """A pooled connection, waited for at most `wait` (default: the call's time left, or 5 s),
        whose statements end before the call's deadline."""
        remaining = context.time_remaining()
        if wait is None:
            wait = 5.0 if remaining is None else max(0.01, remaining)
        async with self._pool.connection(timeout=wait) as conn:
            remaining = context.time_remaining()  # less, by the wait for the connection
            budget = NO_DEADLINE_SECONDS if remaining is None else remaining * STATEMENT_SHARE
            await timeouts.bound(conn, budget * 1000)
            yield conn

    async def _wait_for(self, context: grpc.aio.ServicerContext, tenant_id: str, token_text: str) -> None:
        """Waits until the read models include the token's write: within the call's deadline, and
        never longer than ORDERS_READ_WAIT_SECONDS. A token that is not this tenant's, signed with
        this key, is refused at once (the caller cannot make a query wait on a write of its own
        invention)."""
        if not token_text:
            return
        token = tokens.verify_consistency(self._key, tenant_id, token_text)
        remaining = context.time_remaining()
        cap = self._settings.read_wait_seconds
        budget = cap if remaining is None else min(cap, remaining)
        give_up = time.monotonic() + max(0.0, budget - ANSWER_MARGIN_SECONDS)
        pause = 0.002
        # The projector's notice for an order wakes this read at once; other writes (and a lost
        # notice) are found by re-reading after a growing pause.
        waiter = Watcher(tenant_id, token.aggregate_id if token.aggregate_type == "order" else "", "", stream=False)
        if waiter.order_id:
            self._hub.add(waiter)
        try:
            while True:
                waiter.wake.clear()
                async with self._connection(context) as conn:
                    version = await read_store.applied_version(conn, tenant_id, token.aggregate_type, token.aggregate_id)
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
                            lag_versions=str(token.version - version),
                        ),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wake.wait(), pause)
                pause = min(pause * 2, 0.05)
        finally:
            if waiter.order_id:
                self._hub.remove(waiter)


async def run(settings: Settings) -> None:
    """Composition root of the query-server process."""
    verifier = auth.verifier_from(settings)
    if settings.token_key_generated:
        log.warning(TOKEN_KEY_WARNING)
    pool = AsyncConnectionPool(
        settings.role_database_url("query-server"),
        min_size=2,
        max_size=settings.query_pool_size,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
        open=False,
        name="queries",
    )
    await pool.open(wait=False)
    hub = Hub()
    subscribing = asyncio.create_task(hub.subscribe(settings.require_nats_url(), settings.nats_access))

    async def ready() -> bool:
        async with pool.connection(timeout=1) as conn:
            # Reads leave their own deadline's statement_timeout on the pooled connection; the
            # check sets its own rather than inherit a few milliseconds.
            await timeouts.bound(conn, 1000)
            await conn.execute("SELECT 1")
        return True

    async def end_streams() -> None:
        hub.close()
        deadline = time.monotonic() + min(2.0, settings.grace_seconds)
        while hub.count() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    try:
        await serving.serve(
            addr=settings.query_addr,
            service_names=[pb.DESCRIPTOR.services_by_name["QueryService"].full_name],
            register=lambda server: pb_grpc.add_QueryServiceServicer_to_server(QueryService(pool, hub, settings), server),
            ready=ready,
            max_request_bytes=settings.max_request_bytes,
            max_calls_in_progress=settings.max_calls_in_progress,
            grace_seconds=settings.grace_seconds,
            scopes=serving.required_scopes(pb.DESCRIPTOR.services_by_name["QueryService"], auth.READ),
            verifier=verifier,
            reflection_on=settings.reflection,
            metrics_addr=settings.metrics_addr,
            tls=settings.tls,
            before_stop=end_streams,
            options=serving.STREAM_KEEPALIVE,
            reuse_port=settings.query_servers > 1,
        )
    finally:
        subscribing.cancel()
        if subscribing.done() and not subscribing.cancelled() and subscribing.exception() is None:
            await messaging.close(subscribing.result())
        await pool.close()


_WATCH_ATTRIBUTES = semconv.grpc_method(pb.DESCRIPTOR.services_by_name["QueryService"].full_name, "WatchOrders")


def _push_span(watcher: Watcher, row: Any) -> Any:
    """The push of one update, in the trace of the change it carries when a notice told us which
    (else under the stream's own span)."""
    return telemetry.tracer.start_span(
        "push WatchOrders",
        context=watcher.traces.pop(row.order_id, None),
        kind=SpanKind.PRODUCER,
        attributes={**_WATCH_ATTRIBUTES, "orders.aggregate_id": row.order_id, "orders.aggregate_version": row.version},
    )
