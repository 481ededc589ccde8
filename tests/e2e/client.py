"""Small helpers that build requests and read google.rpc details in tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import command_service_pb2_grpc as cmd_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2
from tests.harness import bearer


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def rid() -> str:
    """A fresh request id."""
    return new_id("r")


def with_token(metadata: Sequence[tuple[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
    """`metadata` with a bearer token for the tenant its x-tenant-id names (default: default),
    unless it carries an authorization of its own."""
    pairs = tuple(metadata or ())
    if any(key == "authorization" for key, _ in pairs):
        return pairs
    tenant = next((str(value) for key, value in pairs if key == "x-tenant-id"), "default")
    return (*pairs, bearer(tenant))


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _Tokens(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Signs every call of a channel in as its tenant: tests speak as a caller with a token."""

    def _details(self, details: Any) -> Any:
        return _Details(details.method, details.timeout, with_token(details.metadata), details.credentials,
                        details.wait_for_ready, getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


# grpc.aio files an interceptor under the first call kind it implements: one class per kind.
class _AioUnaryTokens(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(details._replace(metadata=with_token(details.metadata)), request)


class _AioStreamTokens(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(details._replace(metadata=with_token(details.metadata)), request)


def channel(addr: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel whose calls carry a token of the tenant they name."""
    return grpc.intercept_channel(grpc.insecure_channel(addr, options=options), _Tokens())


def aio_channel(addr: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An asyncio channel whose calls carry a token of the tenant they name."""
    return grpc.aio.insecure_channel(addr, options=options, interceptors=[_AioUnaryTokens(), _AioStreamTokens()])


def commands(addr: str) -> tuple[grpc.Channel, cmd_grpc.CommandServiceStub]:
    ch = channel(addr)
    return ch, cmd_grpc.CommandServiceStub(ch)


def queries(addr: str) -> tuple[grpc.Channel, query_grpc.QueryServiceStub]:
    ch = channel(addr)
    return ch, query_grpc.QueryServiceStub(ch)


def eur(units: int, nanos: int = 0) -> types_pb2.Money:
    return types_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def register(stub: cmd_grpc.CommandServiceStub, customer_id: str) -> cmd_pb.RegisterCustomerResponse:
    reply: cmd_pb.RegisterCustomerResponse = stub.RegisterCustomer(
        cmd_pb.RegisterCustomerRequest(
            request_id=new_id("r"), customer_id=customer_id, display_name="Ada Lovelace", email="ada@example.com"
        ),
        timeout=10,
    )
    return reply


def place_request(order_id: str, customer_id: str, *lines: types_pb2.OrderLine) -> cmd_pb.PlaceOrderRequest:
    return cmd_pb.PlaceOrderRequest(
        request_id=new_id("r"),
        order_id=order_id,
        customer_id=customer_id,
        lines=list(lines) or [types_pb2.OrderLine(product_id="p-1", quantity=2, unit_price=eur(9, 990_000_000))],
    )


def as_tenant(tenant_id: str) -> tuple[tuple[str, str]]:
    """Call metadata naming the tenant; the test channels sign in with that tenant's token."""
    return (("x-tenant-id", tenant_id),)


def place_for_a_new_customer(command_addr: str, tenant_id: str, order_id: str) -> cmd_pb.PlaceOrderResponse:
    """Registers a customer and places `order_id` for it, both as `tenant_id`."""
    _, cmd = commands(command_addr)
    customer_id = new_id("c")
    cmd.RegisterCustomer(cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                        display_name="Ada", email="ada@example.com"),
                         metadata=as_tenant(tenant_id), timeout=10)
    placed: cmd_pb.PlaceOrderResponse = cmd.PlaceOrder(place_request(order_id, customer_id),
                                                       metadata=as_tenant(tenant_id), timeout=10)
    return placed


def status_of(error: grpc.RpcError) -> status_pb2.Status:
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status details on {error}"
    return status


M = TypeVar("M", bound=Message)


def detail(status: status_pb2.Status, kind: type[M]) -> M:
    """The first detail of type `kind` in `status`."""
    for any_detail in status.details:
        if any_detail.Is(kind.DESCRIPTOR):
            message = kind()
            any_detail.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} in {status}")


BadRequest = error_details_pb2.BadRequest
ErrorInfo = error_details_pb2.ErrorInfo
PreconditionFailure = error_details_pb2.PreconditionFailure


def caught_up(query: query_grpc.QueryServiceStub, *written: Any, metadata: Sequence[tuple[str, Any]] | None = None) -> None:
    """Waits, through each order's own consistency token, until the read models hold every one of
    these writes: a token stands for its own order alone (the projector's partitions apply
    different orders independently), so a read of several orders waits for each first."""
    for response in written:
        query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
            order_id=response.order_id, consistency_token=response.consistency_token), metadata=metadata, timeout=10)
