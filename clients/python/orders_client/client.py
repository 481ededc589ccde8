"""OrdersClient: every RPC of CommandService and QueryService as a typed coroutine.

Every call has one deadline (`timeout`), which bounds all its tries. Commands carry a
`request_id` (a new UUID4 unless given), so retrying one is safe: the server answers a repeat with
the first response. gRPC's retry policy repeats a call answered UNAVAILABLE; a call answered
RESOURCE_EXHAUSTED with RetryInfo is tried again after the delay the server asked for, if the
deadline leaves room. Failures raise the OrdersError subclass of their status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import command_service_pb2_grpc as cmd_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2
from orders_client.channel import RetryPolicy, Tls, channel_options, open_channel
from orders_client.errors import ResourceExhaustedError, from_rpc_error
from orders_client.watch import OrderSubscription, Reconnect

R = TypeVar("R")
Token = str | Callable[[], str]


def new_request_id() -> str:
    return str(uuid.uuid4())


class OrdersClient:
    """Talks to a command server and a query server. Use as `async with OrdersClient(...) as c`,
    inside a running event loop (gRPC binds channels to the loop that made them).

    `token`: the bearer JWT every call carries (its tenant_id claim is the caller's tenant), or a
    function returning the current one (called per call, so a refreshed token is picked up).
    `tenant_id`: sent as x-tenant-id, for servers running with ORDERS_AUTH=off.
    `timeout`: the default deadline of a call, in seconds, covering all its tries.
    `tls`: TLS (and mutual TLS with a client certificate); None is plaintext. The keyword
    arguments `root_certificates`, `certificate_chain` and `private_key` are a shorthand for it.
    `retry`: gRPC's retry policy for UNAVAILABLE; None turns gRPC retries off.
    `wait_for_ready`: a call waits (within its deadline) for an unreachable server to come up,
    rather than failing at once with UNAVAILABLE."""

    def __init__(
        self,
        command_addr: str,
        query_addr: str,
        *,
        token: Token | None = None,
        tenant_id: str | None = None,
        timeout: float = 10.0,
        tls: Tls | bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 (frozen, so sharing it is safe)
        wait_for_ready: bool = False,
        reconnect: Reconnect = Reconnect(),  # noqa: B008
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if tls is True or (tls in (None, False) and (root_certificates or certificate_chain or private_key)):
            tls = Tls(root_certificates, certificate_chain, private_key)
        secure = tls if isinstance(tls, Tls) else None
        channel_opts = channel_options(retry, options)
        self._command_channel = open_channel(command_addr, secure, channel_opts)
        self._query_channel = open_channel(query_addr, secure, channel_opts)
        self._commands = cmd_grpc.CommandServiceStub(self._command_channel)
        self._queries = query_grpc.QueryServiceStub(self._query_channel)
        self._token = token
        self._tenant = (("x-tenant-id", tenant_id),) if tenant_id else ()
        self._timeout = timeout
        self._wait_for_ready = wait_for_ready
        self._reconnect = reconnect

    async def __aenter__(self) -> OrdersClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes both channels; calls and subscriptions still open end with CANCELLED."""
        await self._command_channel.close()
        await self._query_channel.close()

    # --- commands (CommandService) --------------------------------------------------------------

    async def register_customer(self, customer_id: str, display_name: str, email: str,
                                credit_limit: types_pb2.Money | None = None, *, request_id: str | None = None,
                                timeout: float | None = None) -> cmd_pb.RegisterCustomerResponse:
        request = cmd_pb.RegisterCustomerRequest(request_id=request_id or new_request_id(), customer_id=customer_id,
                                                 display_name=display_name, email=email, credit_limit=credit_limit)
        return await self._unary(self._commands.RegisterCustomer, request, timeout, cmd_pb.RegisterCustomerResponse)

    async def forget_customer(self, customer_id: str, *, request_id: str | None = None,
                              timeout: float | None = None) -> cmd_pb.ForgetCustomerResponse:
        """Erases the customer's personal data for good (needs the orders.admin scope)."""
        request = cmd_pb.ForgetCustomerRequest(request_id=request_id or new_request_id(), customer_id=customer_id)
        return await self._unary(self._commands.ForgetCustomer, request, timeout, cmd_pb.ForgetCustomerResponse)

    async def reserve_credit(self, customer_id: str, expected_version: int, amount: types_pb2.Money, order_id: str, *,
                             request_id: str | None = None,
                             timeout: float | None = None) -> cmd_pb.ReserveCreditResponse:
        request = cmd_pb.ReserveCreditRequest(request_id=request_id or new_request_id(), customer_id=customer_id,
                                              expected_version=expected_version, amount=amount, order_id=order_id)
        return await self._unary(self._commands.ReserveCredit, request, timeout, cmd_pb.ReserveCreditResponse)

    async def release_credit(self, customer_id: str, expected_version: int, amount: types_pb2.Money, order_id: str, *,
                             request_id: str | None = None,
                             timeout: float | None = None) -> cmd_pb.ReleaseCreditResponse:
        request = cmd_pb.ReleaseCreditRequest(request_id=request_id or new_request_id(), customer_id=customer_id,
                                              expected_version=expected_version, amount=amount, order_id=order_id)
        return await self._unary(self._commands.ReleaseCredit, request, timeout, cmd_pb.ReleaseCreditResponse)

    async def add_stock(self, product_id: str, expected_version: int, quantity: int, *,
                        request_id: str | None = None, timeout: float | None = None) -> cmd_pb.AddStockResponse:
        """`expected_version` 0 creates the product."""
        request = cmd_pb.AddStockRequest(request_id=request_id or new_request_id(), product_id=product_id,
                                         expected_version=expected_version, quantity=quantity)
        return await self._unary(self._commands.AddStock, request, timeout, cmd_pb.AddStockResponse)

    async def reserve_stock(self, product_id: str, expected_version: int, quantity: int, order_id: str, *,
                            request_id: str | None = None,
                            timeout: float | None = None) -> cmd_pb.ReserveStockResponse:
        request = cmd_pb.ReserveStockRequest(request_id=request_id or new_request_id(), product_id=product_id,
                                             expected_version=expected_version, quantity=quantity, order_id=order_id)
        return await self._unary(self._commands.ReserveStock, request, timeout, cmd_pb.ReserveStockResponse)

    async def release_stock(self, product_id: str, expected_version: int, quantity: int, order_id: str, *,
                            request_id: str | None = None,
                            timeout: float | None = None) -> cmd_pb.ReleaseStockResponse:
        request = cmd_pb.ReleaseStockRequest(request_id=request_id or new_request_id(), product_id=product_id,
                                             expected_version=expected_version, quantity=quantity, order_id=order_id)
        return await self._unary(self._commands.ReleaseStock, request, timeout, cmd_pb.ReleaseStockResponse)

    async def place_order(self, order_id: str, customer_id: str, lines: Sequence[types_pb2.OrderLine], *,
                          request_id: str | None = None, timeout: float | None = None) -> cmd_pb.PlaceOrderResponse:
        request = cmd_pb.PlaceOrderRequest(request_id=request_id or new_request_id(), order_id=order_id,
                                           customer_id=customer_id, lines=lines)
        return await self._unary(self._commands.PlaceOrder, request, timeout, cmd_pb.PlaceOrderResponse)

    async def confirm_order(self, order_id: str, expected_version: int, *, request_id: str | None = None,
                            timeout: float | None = None) -> cmd_pb.ConfirmOrderResponse:
        request = cmd_pb.ConfirmOrderRequest(request_id=request_id or new_request_id(), order_id=order_id,
                                             expected_version=expected_version)
        return await self._unary(self._commands.ConfirmOrder, request, timeout, cmd_pb.ConfirmOrderResponse)

    async def cancel_order(self, order_id: str, expected_version: int, reason: types_pb2.CancellationReason,
                           note: str = "", *, request_id: str | None = None,
                           timeout: float | None = None) -> cmd_pb.CancelOrderResponse:
        request = cmd_pb.CancelOrderRequest(request_id=request_id or new_request_id(), order_id=order_id,
                                            expected_version=expected_version, reason=reason, note=note)
        return await self._unary(self._commands.CancelOrder, request, timeout, cmd_pb.CancelOrderResponse)

    async def ship_order(self, order_id: str, expected_version: int, *, request_id: str | None = None,
                         timeout: float | None = None) -> cmd_pb.ShipOrderResponse:
        request = cmd_pb.ShipOrderRequest(request_id=request_id or new_request_id(), order_id=order_id,
                                          expected_version=expected_version)
        return await self._unary(self._commands.ShipOrder, request, timeout, cmd_pb.ShipOrderResponse)

    # --- queries (QueryService) -----------------------------------------------------------------
    # `consistency_token`: a command response's token; the read waits, within the deadline, until
    # the read model includes that write (else UnavailableError, reason READ_MODEL_BEHIND).

    async def get_order_summary(self, order_id: str, consistency_token: str = "", *,
                                timeout: float | None = None) -> query_pb.OrderSummary:
        request = query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=consistency_token)
        reply = await self._unary(self._queries.GetOrderSummary, request, timeout, query_pb.GetOrderSummaryResponse)
        return reply.summary

    async def list_orders(self, customer_id: str = "", state: types_pb2.OrderState = types_pb2.ORDER_STATE_UNSPECIFIED, page_size: int = 0,
                          page_token: str = "", consistency_token: str = "", *,
                          timeout: float | None = None) -> query_pb.ListOrdersResponse:
        """One page of orders by order id; pass its `next_page_token` for the next (same filter)."""
        request = query_pb.ListOrdersRequest(customer_id=customer_id, state=state, page_size=page_size,
                                             page_token=page_token, consistency_token=consistency_token)
        return await self._unary(self._queries.ListOrders, request, timeout, query_pb.ListOrdersResponse)

    async def iter_orders(self, customer_id: str = "", state: types_pb2.OrderState = types_pb2.ORDER_STATE_UNSPECIFIED, page_size: int = 0,
                          consistency_token: str = "", *,
                          timeout: float | None = None) -> AsyncIterator[query_pb.OrderSummary]:
        """Every matching order, page after page (each page a call with its own deadline)."""
        page_token = ""
        while True:
            page = await self.list_orders(customer_id, state, page_size, page_token, consistency_token,
                                          timeout=timeout)
            for summary in page.orders:
                yield summary
            if not page.next_page_token:
                return
            page_token, consistency_token = page.next_page_token, ""

    async def get_customer_orders(self, customer_id: str, consistency_token: str = "", *,
                                  timeout: float | None = None) -> query_pb.GetCustomerOrdersResponse:
        request = query_pb.GetCustomerOrdersRequest(customer_id=customer_id, consistency_token=consistency_token)
        return await self._unary(self._queries.GetCustomerOrders, request, timeout, query_pb.GetCustomerOrdersResponse)

    async def get_product_sales(self, product_id: str = "", consistency_token: str = "", *,
                                timeout: float | None = None) -> list[query_pb.ProductSales]:
        request = query_pb.GetProductSalesRequest(product_id=product_id, consistency_token=consistency_token)
        reply = await self._unary(self._queries.GetProductSales, request, timeout, query_pb.GetProductSalesResponse)
        return list(reply.sales)

    async def get_customer(self, customer_id: str, consistency_token: str = "", *,
                           timeout: float | None = None) -> query_pb.Customer:
        request = query_pb.GetCustomerRequest(customer_id=customer_id, consistency_token=consistency_token)
        reply = await self._unary(self._queries.GetCustomer, request, timeout, query_pb.GetCustomerResponse)
        return reply.customer

    async def get_product(self, product_id: str, consistency_token: str = "", *,
                          timeout: float | None = None) -> query_pb.Product:
        request = query_pb.GetProductRequest(product_id=product_id, consistency_token=consistency_token)
        reply = await self._unary(self._queries.GetProduct, request, timeout, query_pb.GetProductResponse)
        return reply.product

    def watch_orders(self, *, order_id: str = "", customer_id: str = "", resume_token: str = "",
                     reconnect: Reconnect | None = None) -> OrderSubscription:
        """The matching orders' current state, then every committed change, as an async iterator
        of OrderUpdate that resumes by itself with its last token when the stream breaks: no
        update missed, none repeated. Set at most one of `order_id` and `customer_id`."""
        request = query_pb.WatchOrdersRequest(order_id=order_id, customer_id=customer_id, resume_token=resume_token)
        return OrderSubscription(self._queries.WatchOrders, request, self._metadata, reconnect or self._reconnect)

    # --- one call, one deadline -----------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._token() if callable(self._token) else self._token
        return ((("authorization", f"Bearer {token}"),) if token else ()) + self._tenant

    async def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None, reply: type[R]) -> R:
        """One call with one deadline over all its tries. gRPC's retry policy repeats UNAVAILABLE
        within each try; RESOURCE_EXHAUSTED with RetryInfo is tried again here after the delay the
        server asked for, when the deadline leaves room for it. The request (and its request_id)
        is the same on every try. `reply` is the response type (the generated stubs are untyped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._timeout if timeout is None else timeout)
        while True:
            try:
                return cast(R, await method(request, timeout=max(deadline - loop.time(), 0.001),
                                            metadata=self._metadata(), wait_for_ready=self._wait_for_ready))
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
            delay = error.retry_delay if isinstance(error, ResourceExhaustedError) else None
            if delay is None or loop.time() + delay >= deadline:
                raise error from None
            await asyncio.sleep(delay)
