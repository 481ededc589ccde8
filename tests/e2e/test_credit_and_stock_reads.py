"""GetCustomer and GetProduct, the reads a saga decides on, and the cancellation reason on the
order summary, against the real servers, PostgreSQL and NATS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from orders.v1 import command_service_pb2 as pb
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from tests.e2e.client import BadRequest, as_tenant, commands, detail, eur, new_id, place_request, queries, status_of
from tests.harness import Stack

pytestmark = pytest.mark.e2e


def refusal(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert isinstance(caught.value, grpc.RpcError)
    return caught.value


def money(units: int, nanos: int = 0) -> types_pb2.Money:
    return eur(units, nanos)


def test_get_customer_shows_limit_reserved_available_and_version_after_each_write(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")

    def customer(token: str) -> query_pb.Customer:
        reply: query_pb.GetCustomerResponse = query.GetCustomer(
            query_pb.GetCustomerRequest(customer_id=customer_id, consistency_token=token), timeout=10)
        return reply.customer

    registered = cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com",
        credit_limit=money(100)), timeout=10)
    after = customer(registered.consistency_token)
    assert (after.customer_id, after.version) == (customer_id, 1)
    assert (after.credit_limit, after.credit_reserved, after.credit_available) == (money(100), money(0), money(100))
    assert after.HasField("update_time")

    reserved = cmd.ReserveCredit(pb.ReserveCreditRequest(
        request_id=new_id("r"), customer_id=customer_id, expected_version=1, amount=money(30, 250_000_000),
        order_id="o-1"), timeout=10)
    after = customer(reserved.consistency_token)
    assert after.version == 2
    assert (after.credit_limit, after.credit_reserved, after.credit_available) == (
        money(100), money(30, 250_000_000), money(69, 750_000_000))

    released = cmd.ReleaseCredit(pb.ReleaseCreditRequest(
        request_id=new_id("r"), customer_id=customer_id, expected_version=2, amount=money(10, 250_000_000),
        order_id="o-1"), timeout=10)
    after = customer(released.consistency_token)
    assert after.version == 3
    assert (after.credit_reserved, after.credit_available) == (money(20), money(80))


def test_get_product_shows_on_hand_reserved_available_and_version_after_each_write(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    product_id = new_id("p")

    def product(token: str) -> tuple[int, int, int, int]:
        p = query.GetProduct(query_pb.GetProductRequest(product_id=product_id, consistency_token=token),
                             timeout=10).product
        assert p.product_id == product_id
        return p.on_hand, p.reserved, p.available, p.version

    added = cmd.AddStock(pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, expected_version=0,
                                            quantity=10), timeout=10)
    assert product(added.consistency_token) == (10, 0, 10, 1)
    reserved = cmd.ReserveStock(pb.ReserveStockRequest(request_id=new_id("r"), product_id=product_id,
                                                       expected_version=1, quantity=4, order_id="o-1"), timeout=10)
    assert product(reserved.consistency_token) == (10, 4, 6, 2)
    more = cmd.AddStock(pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, expected_version=2,
                                           quantity=5), timeout=10)
    assert product(more.consistency_token) == (15, 4, 11, 3)
    released = cmd.ReleaseStock(pb.ReleaseStockRequest(request_id=new_id("r"), product_id=product_id,
                                                       expected_version=3, quantity=3, order_id="o-1"), timeout=10)
    assert product(released.consistency_token) == (15, 1, 14, 4)


def test_an_unknown_or_another_tenants_customer_or_product_is_not_found(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id, product_id = new_id("c"), new_id("p")
    theirs, ours = as_tenant("acme"), as_tenant("globex")
    registered = cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com",
        credit_limit=money(5)), timeout=10, metadata=theirs)
    added = cmd.AddStock(pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, expected_version=0,
                                            quantity=1), timeout=10, metadata=theirs)
    # In acme's read models by now:
    query.GetCustomer(query_pb.GetCustomerRequest(customer_id=customer_id,
                                                  consistency_token=registered.consistency_token),
                      timeout=10, metadata=theirs)
    query.GetProduct(query_pb.GetProductRequest(product_id=product_id, consistency_token=added.consistency_token),
                     timeout=10, metadata=theirs)

    calls: list[tuple[str, Callable[[], Any]]] = [
        ("customer", lambda: query.GetCustomer(query_pb.GetCustomerRequest(customer_id=customer_id),
                                               timeout=10, metadata=ours)),
        ("customer", lambda: query.GetCustomer(query_pb.GetCustomerRequest(customer_id=new_id("c")),
                                               timeout=10, metadata=theirs)),
        ("product", lambda: query.GetProduct(query_pb.GetProductRequest(product_id=product_id),
                                             timeout=10, metadata=ours)),
        ("product", lambda: query.GetProduct(query_pb.GetProductRequest(product_id=new_id("p")),
                                             timeout=10, metadata=theirs)),
    ]
    for kind, call in calls:
        error = refusal(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        assert detail(status_of(error), error_details_pb2.ResourceInfo).resource_type == kind


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 65, "-leading-dash"])
def test_a_bad_customer_or_product_id_is_invalid_argument_naming_the_field(stack: Stack, bad_id: str) -> None:
    _, query = queries(stack.query_addr)

    customer = refusal(lambda: query.GetCustomer(query_pb.GetCustomerRequest(customer_id=bad_id), timeout=10))
    product = refusal(lambda: query.GetProduct(query_pb.GetProductRequest(product_id=bad_id), timeout=10))

    for error, field in ((customer, "customer_id"), (product, "product_id")):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in detail(status_of(error), BadRequest).field_violations] == [field]


def test_a_forged_consistency_token_on_get_customer_is_invalid_argument(stack: Stack) -> None:
    _, query = queries(stack.query_addr)

    error = refusal(lambda: query.GetCustomer(query_pb.GetCustomerRequest(
        customer_id=new_id("c"), consistency_token="Y3VzdG9tZXJ8Yy0xfDk5OQ.AAAA"), timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_cancelled_orders_summary_carries_its_reason_and_note_and_others_carry_none(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                    display_name="Ada", email="ada@example.com"), timeout=10)
    cancelled, confirmed = (cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10) for _ in range(2))
    done = cmd.CancelOrder(pb.CancelOrderRequest(
        request_id=new_id("r"), order_id=cancelled.order_id, expected_version=1,
        reason=types_pb2.CANCELLATION_REASON_OUT_OF_STOCK, note="p-1: 2 short"), timeout=10)
    kept = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=confirmed.order_id,
                                                   expected_version=1), timeout=10)

    summary = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=cancelled.order_id, consistency_token=done.consistency_token), timeout=10).summary
    other = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=confirmed.order_id, consistency_token=kept.consistency_token), timeout=10).summary
    listed = query.ListOrders(query_pb.ListOrdersRequest(
        customer_id=customer_id, state=types_pb2.ORDER_STATE_CANCELLED), timeout=10).orders

    assert summary.state == types_pb2.ORDER_STATE_CANCELLED
    assert summary.cancellation == query_pb.OrderCancellation(
        reason=types_pb2.CANCELLATION_REASON_OUT_OF_STOCK, note="p-1: 2 short")
    assert other.state == types_pb2.ORDER_STATE_CONFIRMED and not other.HasField("cancellation")
    assert [o.cancellation.reason for o in listed] == [types_pb2.CANCELLATION_REASON_OUT_OF_STOCK]


def test_watch_orders_carries_the_cancellation_reason(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                    display_name="Ada", email="ada@example.com"), timeout=10)
    placed = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    cmd.CancelOrder(pb.CancelOrderRequest(request_id=new_id("r"), order_id=placed.order_id, expected_version=1,
                                          reason=types_pb2.CANCELLATION_REASON_CREDIT_DECLINED), timeout=10)

    stream = query.WatchOrders(query_pb.WatchOrdersRequest(order_id=placed.order_id), timeout=10)
    try:
        cancelled = next(m.update.summary for m in stream if m.HasField("update") and m.update.summary.version == 2)
    finally:
        stream.cancel()

    assert cancelled.cancellation == query_pb.OrderCancellation(reason=types_pb2.CANCELLATION_REASON_CREDIT_DECLINED)
