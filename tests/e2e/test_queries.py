"""ListOrders paging, the customer and product views, and their validation, against the real
servers, PostgreSQL and NATS."""

from __future__ import annotations

from typing import cast

import grpc
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from tests.e2e.client import (
    BadRequest,
    caught_up,
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
TENANT = (("x-tenant-id", "paging"),)


def _place(cmd: pb_grpc.CommandServiceStub, order_id: str, customer_id: str, *lines: types_pb2.OrderLine) -> pb.PlaceOrderResponse:
    reply: pb.PlaceOrderResponse = cmd.PlaceOrder(place_request(order_id, customer_id, *lines), timeout=10, metadata=TENANT)
    return reply


def _field(error: grpc.RpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    return [v.field for v in detail(status_of(error), BadRequest).field_violations]


def test_list_orders_walks_every_order_exactly_once_across_pages(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                    display_name="Ada", email="ada@example.com"), metadata=TENANT)
    placed = [_place(cmd, new_id("o"), customer_id) for _ in range(23)]
    caught_up(query, *placed, metadata=TENANT)
    seen: list[str] = []
    token = ""

    while True:
        page = query.ListOrders(query_pb.ListOrdersRequest(
            customer_id=customer_id, page_size=5, page_token=token, consistency_token=placed[-1].consistency_token,
        ), timeout=10, metadata=TENANT)
        # A change while walking must not move an order to another page.
        if not seen:
            cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=page.orders[0].order_id,
                                                    expected_version=1), metadata=TENANT)
        seen += [o.order_id for o in page.orders]
        assert len(page.orders) <= 5
        token = page.next_page_token
        if not token:
            break

    assert seen == sorted(p.order_id for p in placed)


def test_list_orders_filters_by_state_and_defaults_its_page_size(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    first, second = (cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10) for _ in range(2))
    confirmed = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=first.order_id, expected_version=1))
    caught_up(query, second)

    placed = query.ListOrders(query_pb.ListOrdersRequest(
        customer_id=customer_id, state=types_pb2.ORDER_STATE_PLACED, consistency_token=confirmed.consistency_token), timeout=10)
    every = query.ListOrders(query_pb.ListOrdersRequest(customer_id=customer_id), timeout=10)

    assert [o.order_id for o in placed.orders] == [second.order_id]
    assert {o.order_id for o in every.orders} == {first.order_id, second.order_id}
    assert every.next_page_token == ""


def test_a_tampered_or_cross_filter_page_token_is_invalid_argument(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id, other = new_id("c"), new_id("c")
    register(cmd, customer_id)
    *earlier, last = [cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10) for _ in range(3)]
    caught_up(query, *earlier)
    token = query.ListOrders(query_pb.ListOrdersRequest(
        customer_id=customer_id, page_size=1, consistency_token=last.consistency_token), timeout=10).next_page_token
    assert token
    body, mac = token.split(".")
    tampered = body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac

    for request in (
        query_pb.ListOrdersRequest(customer_id=customer_id, page_token=tampered),
        query_pb.ListOrdersRequest(customer_id=other, page_token=token),
        query_pb.ListOrdersRequest(customer_id=customer_id, state=types_pb2.ORDER_STATE_SHIPPED, page_token=token),
        query_pb.ListOrdersRequest(page_token=token),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            query.ListOrders(request, timeout=10)
        assert _field(raised.value) == ["page_token"]
    with pytest.raises(grpc.RpcError) as raised:
        query.ListOrders(query_pb.ListOrdersRequest(customer_id=customer_id, page_token=token), timeout=10,
                         metadata=(("x-tenant-id", "another"),))
    assert _field(raised.value) == ["page_token"]


def test_bad_query_fields_are_invalid_argument_naming_each_field(stack: Stack) -> None:
    _, query = queries(stack.query_addr)
    cases = [
        (query.ListOrders, query_pb.ListOrdersRequest(customer_id="bad id", state=cast(types_pb2.OrderState, 99), page_size=-1),
         ["customer_id", "state", "page_size"]),
        (query.GetCustomerOrders, query_pb.GetCustomerOrdersRequest(), ["customer_id"]),
        (query.GetProductSales, query_pb.GetProductSalesRequest(product_id="no spaces"), ["product_id"]),
        (query.GetOrderSummary, query_pb.GetOrderSummaryRequest(order_id="o-1", consistency_token="forged"),
         ["consistency_token"]),
    ]
    for rpc, request, fields in cases:
        with pytest.raises(grpc.RpcError) as raised:
            rpc(request, timeout=10)
        assert _field(raised.value) == fields
    for request, fields in (
        (query_pb.WatchOrdersRequest(order_id="o-1", customer_id="c-1"), ["customer_id"]),
        (query_pb.WatchOrdersRequest(customer_id="c-1", resume_token="x.y"), ["resume_token"]),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            next(query.WatchOrders(request, timeout=10))
        assert _field(raised.value) == fields


def test_customer_and_product_views_add_up_the_orders_exactly(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id, product_id = new_id("c"), new_id("p")
    register(cmd, customer_id)
    line = types_pb2.OrderLine(product_id=product_id, quantity=3, unit_price=eur(9, 990_000_000))
    first = cmd.PlaceOrder(place_request(new_id("o"), customer_id, line), timeout=10)
    second = cmd.PlaceOrder(place_request(new_id("o"), customer_id, line), timeout=10)
    cancelled = cmd.CancelOrder(pb.CancelOrderRequest(
        request_id=new_id("r"), order_id=first.order_id, expected_version=1,
        reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST), timeout=10)
    caught_up(query, second)

    view = query.GetCustomerOrders(query_pb.GetCustomerOrdersRequest(
        customer_id=customer_id, consistency_token=cancelled.consistency_token), timeout=10)
    sales = query.GetProductSales(query_pb.GetProductSalesRequest(product_id=product_id), timeout=10)

    by_state = {t.state: (t.order_count, t.total) for t in view.totals}
    assert by_state == {types_pb2.ORDER_STATE_PLACED: (1, eur(29, 970_000_000)),
                        types_pb2.ORDER_STATE_CANCELLED: (1, eur(29, 970_000_000))}
    assert view.HasField("last_order_time")
    assert [(s.product_id, s.units_sold, s.revenue) for s in sales.sales] == [(product_id, 3, eur(29, 970_000_000))]


def test_a_cancelled_order_moves_to_cancelled_and_leaves_the_sales_but_not_the_last_order_time(stack: Stack) -> None:
    """Given two orders of one customer, the newer one confirmed; when that one is cancelled,
    then the dashboard counts it once, under CANCELLED, its lines leave the product sales (a
    product with no other order stays listed at zero), and the last order time is still when it
    was placed."""
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id, kept, dropped = new_id("c"), new_id("p"), new_id("p")
    register(cmd, customer_id)
    older = cmd.PlaceOrder(place_request(new_id("o"), customer_id,
                                         types_pb2.OrderLine(product_id=kept, quantity=2, unit_price=eur(5))), timeout=10)
    caught_up(query, older)
    newer = cmd.PlaceOrder(place_request(
        new_id("o"), customer_id, types_pb2.OrderLine(product_id=kept, quantity=1, unit_price=eur(5)),
        types_pb2.OrderLine(product_id=dropped, quantity=4, unit_price=eur(1, 250_000_000))), timeout=10)
    placed_time = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=newer.order_id, consistency_token=newer.consistency_token), timeout=10).summary.update_time
    cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=newer.order_id, expected_version=1),
                     timeout=10)

    cancelled = cmd.CancelOrder(pb.CancelOrderRequest(
        request_id=new_id("r"), order_id=newer.order_id, expected_version=2,
        reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST), timeout=10)

    view = query.GetCustomerOrders(query_pb.GetCustomerOrdersRequest(
        customer_id=customer_id, consistency_token=cancelled.consistency_token), timeout=10)
    assert [(t.state, t.order_count, t.total) for t in view.totals] == [
        (types_pb2.ORDER_STATE_PLACED, 1, eur(10)), (types_pb2.ORDER_STATE_CANCELLED, 1, eur(10))]
    assert view.last_order_time == placed_time
    for product_id, units, revenue in ((kept, 2, eur(10)), (dropped, 0, eur(0))):
        sales = query.GetProductSales(query_pb.GetProductSalesRequest(product_id=product_id), timeout=10)
        assert [(s.product_id, s.units_sold, s.revenue) for s in sales.sales] == [(product_id, units, revenue)]
