"""Small helpers that build requests and read google.rpc details in tests."""

from __future__ import annotations

import uuid
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import command_service_pb2_grpc as cmd_grpc
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def rid() -> str:
    """A fresh request id."""
    return new_id("r")


def commands(addr: str) -> tuple[grpc.Channel, cmd_grpc.CommandServiceStub]:
    channel = grpc.insecure_channel(addr)
    return channel, cmd_grpc.CommandServiceStub(channel)


def queries(addr: str) -> tuple[grpc.Channel, query_grpc.QueryServiceStub]:
    channel = grpc.insecure_channel(addr)
    return channel, query_grpc.QueryServiceStub(channel)


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
