"""The seed's command rules against the real servers, PostgreSQL and NATS."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from tests.e2e.client import (
    BadRequest,
    ErrorInfo,
    PreconditionFailure,
    commands,
    detail,
    eur,
    new_id,
    place_request,
    queries,
    register,
    status_of,
)
from tests.harness import Stack

pytestmark = pytest.mark.e2e


def counts(db: psycopg.Connection) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM events), (SELECT count(*) FROM idempotency)"
    ).fetchone()
    assert row is not None
    return row


def test_a_placed_order_is_read_back_with_its_exact_total_using_the_token(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    register(cmd, customer_id)
    lines = [
        types_pb2.OrderLine(product_id="p-1", quantity=3, unit_price=eur(9, 990_000_000)),
        types_pb2.OrderLine(product_id="p-2", quantity=1, unit_price=eur(0, 10_000_000)),
    ]

    placed = cmd.PlaceOrder(place_request(order_id, customer_id, *lines), timeout=10)
    got = query.GetOrderSummary(
        query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=placed.consistency_token), timeout=10
    )

    assert (placed.order_id, placed.version) == (order_id, 1)
    assert got.summary.state == types_pb2.ORDER_STATE_PLACED
    assert got.summary.total == eur(29, 980_000_000)
    assert got.summary.version == 1
    assert list(got.summary.lines) == lines


def test_a_repeated_request_id_returns_the_first_response_and_writes_nothing(stack: Stack, db: psycopg.Connection) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    request = place_request(new_id("o"), customer_id)
    first = cmd.PlaceOrder(request, timeout=10)
    before = counts(db)

    again = cmd.PlaceOrder(request, timeout=10)

    assert again == first
    assert counts(db) == before


def test_a_request_id_reused_for_another_payload_is_rejected(stack: Stack, db: psycopg.Connection) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    request = place_request(new_id("o"), customer_id)
    cmd.PlaceOrder(request, timeout=10)
    before = counts(db)
    request.order_id = new_id("o")

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail(status_of(caught.value), ErrorInfo).reason == "REQUEST_ID_REUSED"
    assert counts(db) == before


def test_bad_lines_are_invalid_argument_naming_each_field(stack: Stack, db: psycopg.Connection) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    before = counts(db)
    request = place_request(
        new_id("o"),
        customer_id,
        types_pb2.OrderLine(product_id="p-1", quantity=0, unit_price=eur(1)),
        types_pb2.OrderLine(product_id="p-2", quantity=1, unit_price=eur(0)),
    )

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in detail(status_of(caught.value), BadRequest).field_violations}
    assert fields == {"lines[0].quantity", "lines[1].unit_price"}
    assert counts(db) == before


def test_an_order_without_lines_is_invalid_argument(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    request = place_request(new_id("o"), new_id("c"))
    del request.lines[:]

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in detail(status_of(caught.value), BadRequest).field_violations] == ["lines"]


def test_an_order_for_an_unknown_customer_fails_its_precondition(stack: Stack, db: psycopg.Connection) -> None:
    _, cmd = commands(stack.command_addr)
    before = counts(db)

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(place_request(new_id("o"), "nobody"), timeout=10)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    violation = detail(status_of(caught.value), PreconditionFailure).violations[0]
    assert (violation.type, violation.subject) == ("CUSTOMER_EXISTS", "customers/nobody")
    assert counts(db) == before


def test_placing_an_existing_order_id_again_is_already_exists(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    register(cmd, customer_id)
    cmd.PlaceOrder(place_request(order_id, customer_id), timeout=10)

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(place_request(order_id, customer_id), timeout=10)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_bytes_that_are_not_a_request_are_invalid_argument_and_the_server_stays_serving(stack: Stack) -> None:
    channel, _ = commands(stack.command_addr)
    raw = channel.unary_unary("/orders.v1.CommandService/PlaceOrder")

    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff\xff garbage", timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    from tests.harness import serving

    assert serving(stack.command_addr)


def test_a_request_over_the_size_limit_is_resource_exhausted(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    request = place_request(new_id("o"), new_id("c"))
    request.lines[0].product_id = "x" * (300 * 1024)

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_request_without_request_id_is_invalid_argument(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    request = place_request(new_id("o"), new_id("c"))
    request.request_id = ""

    with pytest.raises(grpc.RpcError) as caught:
        cmd.PlaceOrder(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in detail(status_of(caught.value), BadRequest).field_violations] == ["request_id"]


def test_a_forged_consistency_token_is_invalid_argument(stack: Stack) -> None:
    _, query = queries(stack.query_addr)

    with pytest.raises(grpc.RpcError) as caught:
        query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id="o-1", consistency_token="nonsense!"), timeout=5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unknown_order_is_not_found(stack: Stack) -> None:
    _, query = queries(stack.query_addr)

    with pytest.raises(grpc.RpcError) as caught:
        query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=new_id("o")), timeout=5)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
