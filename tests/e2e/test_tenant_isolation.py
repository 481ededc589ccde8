"""Two tenants with colliding ids, against the real servers: whatever ids Hypothesis draws, tenant
A's token never sees, changes, pages into, resumes into or watches tenant B's data, through every
RPC. Each tenant owns a customer, two orders and a product under the same ids, with different
quantities, so every answer tells whose row it came from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from tests.e2e.client import commands, eur, new_id, queries
from tests.harness import Stack

pytestmark = pytest.mark.e2e
CUSTOMER_REQUEST = types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST

# Ids as callers write them (letters, digits, _.:-), tenants as tokens carry them.
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
tenants = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)


@dataclass
class Tenant:
    name: str
    quantity: int  # every line of this tenant's orders: tells whose row an answer holds

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-tenant-id", self.name),)  # the test channel signs in with this tenant's token


@dataclass
class Written:
    orders: list[pb.PlaceOrderResponse]


def populate(cmd: pb_grpc.CommandServiceStub, tenant: Tenant, customer_id: str, order_ids: list[str],
             product_id: str) -> Written:
    md = tenant.metadata
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                    display_name="Ann", email="ann@example.com"),
                         timeout=10, metadata=md)
    cmd.AddStock(pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, quantity=100), timeout=10,
                 metadata=md)
    line = types_pb2.OrderLine(product_id=product_id, quantity=tenant.quantity, unit_price=eur(2))
    placed = [cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=new_id("r"), order_id=order_id,
                                                  customer_id=customer_id, lines=[line]), timeout=10, metadata=md)
              for order_id in order_ids]
    return Written(placed)


def refused(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        response = call()
        for _ in response if hasattr(response, "__next__") else ():
            break
    return error.value.code()


@settings(max_examples=12)
@given(pair=st.lists(tenants, min_size=2, max_size=2, unique=True), customer=ids, order=ids, product=ids)
def test_a_tenant_never_reaches_another_tenants_rows_with_the_same_ids(
    stack: Stack, pair: list[str], customer: str, order: str, product: str
) -> None:
    run = uuid.uuid4().hex[:6]  # examples share a database: each draws fresh rows
    customer_id, product_id = f"{customer}-{run}"[:64], f"{product}-{run}"[:64]
    order_ids = [f"{order}-{run}-1"[:64], f"{order}-{run}-2"[:64]]
    a, b = Tenant(f"{pair[0]}-{run}", quantity=1), Tenant(f"{pair[1]}-{run}", quantity=7)
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    mine = populate(cmd, a, customer_id, order_ids, product_id)
    theirs = populate(cmd, b, customer_id, order_ids, product_id)

    # Reads: A sees its own rows under the shared ids, never B's.
    summary = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=order_ids[0], consistency_token=mine.orders[0].consistency_token), timeout=10, metadata=a.metadata)
    assert [line.quantity for line in summary.summary.lines] == [a.quantity]
    listed = query.ListOrders(query_pb.ListOrdersRequest(
        customer_id=customer_id, consistency_token=mine.orders[1].consistency_token), timeout=10, metadata=a.metadata)
    assert [(o.order_id, o.lines[0].quantity) for o in listed.orders] == [(i, a.quantity) for i in sorted(order_ids)]
    dashboard = query.GetCustomerOrders(query_pb.GetCustomerOrdersRequest(customer_id=customer_id), timeout=10,
                                        metadata=a.metadata)
    assert [t.order_count for t in dashboard.totals] == [2]
    assert dashboard.totals[0].total == eur(2 * 2 * a.quantity)
    sales = query.GetProductSales(query_pb.GetProductSalesRequest(product_id=product_id), timeout=10,
                                  metadata=a.metadata)
    assert [s.units_sold for s in sales.sales] == [2 * a.quantity]

    # B's tokens, in A's hands: a consistency token, a page token, a resume token. (A token stands
    # for its own order: the two may be applied in either order, so B reads the first one first.)
    query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=order_ids[0], consistency_token=theirs.orders[0].consistency_token), timeout=10, metadata=b.metadata)
    b_page = query.ListOrders(query_pb.ListOrdersRequest(
        customer_id=customer_id, page_size=1, consistency_token=theirs.orders[1].consistency_token),
        timeout=10, metadata=b.metadata)
    b_watch = query.WatchOrders(query_pb.WatchOrdersRequest(order_id=order_ids[0]), timeout=10, metadata=b.metadata)
    b_update = next(m for m in b_watch if m.HasField("update")).update
    b_watch.cancel()
    assert b_update.summary.lines[0].quantity == b.quantity and b_page.next_page_token
    assert refused(lambda: query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=order_ids[0], consistency_token=theirs.orders[0].consistency_token), timeout=10,
        metadata=a.metadata)) == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(lambda: query.ListOrders(query_pb.ListOrdersRequest(
        customer_id=customer_id, page_size=1, page_token=b_page.next_page_token), timeout=10,
        metadata=a.metadata)) == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(lambda: query.WatchOrders(query_pb.WatchOrdersRequest(
        order_id=order_ids[0], resume_token=b_update.resume_token), timeout=10,
        metadata=a.metadata)) == grpc.StatusCode.INVALID_ARGUMENT

    # A watching the shared order id sees its own order only.
    a_watch = query.WatchOrders(query_pb.WatchOrdersRequest(order_id=order_ids[0]), timeout=10, metadata=a.metadata)
    a_update = next(m for m in a_watch if m.HasField("update")).update
    a_watch.cancel()
    assert a_update.summary.lines[0].quantity == a.quantity

    # Writes: A changes its own order under the shared id; B's stays as it was.
    a_confirmed = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=order_ids[0],
                                                          expected_version=1), timeout=10, metadata=a.metadata)
    b_cancelled = cmd.CancelOrder(pb.CancelOrderRequest(request_id=new_id("r"), order_id=order_ids[0],
                                                        expected_version=1, reason=CUSTOMER_REQUEST),
                                  timeout=10, metadata=b.metadata)
    b_summary = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=order_ids[0], consistency_token=b_cancelled.consistency_token), timeout=10, metadata=b.metadata)
    assert (a_confirmed.version, b_cancelled.version) == (2, 2)  # B's order was still at 1: A did not touch it
    assert b_summary.summary.state == types_pb2.ORDER_STATE_CANCELLED

    # An id only B holds is NOT_FOUND to A, read or written: nothing tells A it exists.
    only_b = f"{order}-{run}-b"[:64]
    placed = cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=new_id("r"), order_id=only_b, customer_id=customer_id, lines=[
        types_pb2.OrderLine(product_id=product_id, quantity=b.quantity, unit_price=eur(2))]), timeout=10,
        metadata=b.metadata)
    query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=only_b, consistency_token=placed.consistency_token),
                          timeout=10, metadata=b.metadata)  # in B's read model by now
    assert refused(lambda: query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=only_b), timeout=10,
                                                 metadata=a.metadata)) == grpc.StatusCode.NOT_FOUND
    assert refused(lambda: cmd.CancelOrder(pb.CancelOrderRequest(request_id=new_id("r"), order_id=only_b,
                                                                 expected_version=1, reason=CUSTOMER_REQUEST),
                                           timeout=10, metadata=a.metadata)) == grpc.StatusCode.NOT_FOUND
