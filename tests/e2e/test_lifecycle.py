"""The whole lifecycle against the real servers: each rule's status and details, and the read
model following every change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from server.command import handlers, store
from server.command.unit_of_work import Written
from server.config import libpq_url
from server.domain import commands as c
from server.domain.money import Money
from server.platform import personal, timeouts, wire
from tests.e2e.client import (
    ErrorInfo,
    PreconditionFailure,
    commands,
    detail,
    eur,
    new_id,
    place_request,
    queries,
    rid,
    status_of,
)
from tests.harness import Stack, wait_until

pytestmark = pytest.mark.e2e


def test_an_order_goes_from_placed_to_shipped_with_stock_and_credit_reserved(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id, product_id, order_id = new_id("c"), new_id("p"), new_id("o")
    customer = cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=rid(), customer_id=customer_id, display_name="Ada", email="ada@example.com", credit_limit=eur(100)))
    stock = cmd.AddStock(pb.AddStockRequest(request_id=rid(), product_id=product_id, expected_version=0, quantity=10))
    line = types_pb2.OrderLine(product_id=product_id, quantity=3, unit_price=eur(9, 990_000_000))
    placed = cmd.PlaceOrder(place_request(order_id, customer_id, line))

    credit = cmd.ReserveCredit(pb.ReserveCreditRequest(
        request_id=rid(), customer_id=customer_id, expected_version=customer.version, amount=eur(29, 970_000_000), order_id=order_id))
    reserved = cmd.ReserveStock(pb.ReserveStockRequest(
        request_id=rid(), product_id=product_id, expected_version=stock.version, quantity=3, order_id=order_id))
    confirmed = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=placed.version))
    shipped = cmd.ShipOrder(pb.ShipOrderRequest(request_id=rid(), order_id=order_id, expected_version=confirmed.version))
    summary = query.GetOrderSummary(
        query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=shipped.consistency_token), timeout=10).summary

    assert (credit.customer_id, credit.version) == (customer_id, 2)
    assert (reserved.product_id, reserved.version) == (product_id, 2)
    assert [placed.version, confirmed.version, shipped.version] == [1, 2, 3]
    assert (summary.state, summary.version) == (types_pb2.ORDER_STATE_SHIPPED, 3)


def test_a_stale_expected_version_is_aborted_with_both_versions(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    order_id = _placed_order(cmd)
    cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=1))

    with pytest.raises(grpc.RpcError) as caught:
        cmd.CancelOrder(pb.CancelOrderRequest(
            request_id=rid(), order_id=order_id, expected_version=1, reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST))

    assert caught.value.code() == grpc.StatusCode.ABORTED
    info = detail(status_of(caught.value), ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("VERSION_CONFLICT", {"expected": "1", "actual": "2"})


def test_shipping_a_placed_order_fails_its_precondition_and_changes_nothing(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    order_id = _placed_order(cmd)

    with pytest.raises(grpc.RpcError) as caught:
        cmd.ShipOrder(pb.ShipOrderRequest(request_id=rid(), order_id=order_id, expected_version=1))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    violation = detail(status_of(caught.value), PreconditionFailure).violations[0]
    assert (violation.type, violation.subject) == ("ORDER_STATE", f"orders/{order_id}")
    confirmed = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=1))
    assert confirmed.version == 2  # the failed command left version 1 as it was


def test_cancelling_a_shipped_order_fails_its_precondition(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    order_id = _placed_order(cmd)
    cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=1))
    cmd.ShipOrder(pb.ShipOrderRequest(request_id=rid(), order_id=order_id, expected_version=2))

    with pytest.raises(grpc.RpcError) as caught:
        cmd.CancelOrder(pb.CancelOrderRequest(
            request_id=rid(), order_id=order_id, expected_version=3, reason=types_pb2.CANCELLATION_REASON_OTHER))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_an_unknown_order_is_not_found_and_an_existing_product_already_exists(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    product_id = new_id("p")
    cmd.AddStock(pb.AddStockRequest(request_id=rid(), product_id=product_id, expected_version=0, quantity=1))

    with pytest.raises(grpc.RpcError) as missing:
        cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=new_id("o"), expected_version=1))
    with pytest.raises(grpc.RpcError) as taken:
        cmd.AddStock(pb.AddStockRequest(request_id=rid(), product_id=product_id, expected_version=0, quantity=1))

    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_reserving_beyond_the_credit_limit_fails_its_precondition(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=rid(), customer_id=customer_id, display_name="Ada", email="ada@example.com", credit_limit=eur(10)))

    with pytest.raises(grpc.RpcError) as caught:
        cmd.ReserveCredit(pb.ReserveCreditRequest(
            request_id=rid(), customer_id=customer_id, expected_version=1, amount=eur(10, 1), order_id="o-1"))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert detail(status_of(caught.value), PreconditionFailure).violations[0].type == "CREDIT_LIMIT"


def test_a_cancellation_without_a_reason_names_the_field(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)

    with pytest.raises(grpc.RpcError) as caught:
        cmd.CancelOrder(pb.CancelOrderRequest(request_id=rid(), order_id="o-1", expected_version=1, reason=99))  # type: ignore[arg-type]

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _placed_order(cmd: object) -> str:
    customer_id, order_id = new_id("c"), new_id("o")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(  # type: ignore[attr-defined]
        request_id=rid(), customer_id=customer_id, display_name="Ada", email="ada@example.com"))
    cmd.PlaceOrder(place_request(order_id, customer_id))  # type: ignore[attr-defined]
    return order_id


def test_a_command_stalled_past_its_deadline_is_cancelled_in_the_database_too(
    stack: Stack, database_url: str
) -> None:
    _, cmd = commands(stack.command_addr)
    order_id = _placed_order(cmd)
    with psycopg.connect(libpq_url(database_url)) as blocker:  # holds the order's row
        blocker.execute("SELECT 1 FROM orders WHERE order_id = %s FOR UPDATE", (order_id,))

        with pytest.raises(grpc.RpcError) as caught:
            cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=1), timeout=0.5)

        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The statement timeout came from the deadline: the database gives up too, while the
        # blocker still holds the lock.
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%UPDATE orders%%'"
        with psycopg.connect(libpq_url(database_url), autocommit=True) as observer:
            wait_until(lambda: observer.execute(waiting).fetchone() == (0,), timeout=5, what="the stalled write to be cancelled")
    confirmed = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=1), timeout=10)
    assert confirmed.version == 2  # the cancelled attempt changed nothing


def test_an_order_stalled_past_its_deadline_is_cancelled_in_the_database_too(stack: Stack, database_url: str) -> None:
    # PlaceOrder writes without a read first, on a pooled connection that last served calls with
    # ten seconds: the stalled write still ends in the database (by the timeout it sets, or the
    # call's cancellation, whichever comes first) and writes nothing.
    _, cmd = commands(stack.command_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=rid(), customer_id=customer_id, display_name="Ada", email="ada@example.com"), timeout=10)
    with psycopg.connect(libpq_url(database_url)) as blocker:  # the order's foreign key waits for the customer
        blocker.execute("SELECT 1 FROM customers WHERE customer_id = %s FOR UPDATE", (customer_id,))

        with pytest.raises(grpc.RpcError) as caught:
            cmd.PlaceOrder(place_request(order_id, customer_id), timeout=0.5)

        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO orders%%'"
        with psycopg.connect(libpq_url(database_url), autocommit=True) as observer:
            wait_until(lambda: observer.execute(waiting).fetchone() == (0,), timeout=5, what="the stalled write to be cancelled")
    placed = cmd.PlaceOrder(place_request(order_id, customer_id), timeout=10)
    assert placed.version == 1  # the cancelled attempt wrote nothing


HANDLERS: dict[type[c.Command], Callable[[store.Session, Any], Awaitable[Written]]] = {
    c.RegisterCustomer: handlers.register_customer,
    c.PlaceOrder: handlers.place_order,
    c.ReserveCredit: handlers.reserve_credit,
}


def test_each_command_runs_under_its_own_deadline_on_a_shared_connection(database_url: str) -> None:
    """RegisterCustomer and PlaceOrder set the connection's statement timeout only when their
    deadline's step differs from what it last had; reads set it in their own statement. Either
    way no command runs under the timeout of the one before it."""
    async def run(conn: psycopg.AsyncConnection, command: c.Command, budget_ms: float) -> str:
        request_id = rid()
        ctx = wire.EventContext("default", "corr", request_id, "test")
        session = store.Session(store.OnConnection(conn), ctx, request_id, type(command).__name__, b"hash", timeout_ms=budget_ms,
                                kek=personal.new_data_key(bytes(32), "default", "kek").key)
        await HANDLERS[type(command)](session, command)
        await session.commit(b"")
        cursor = await conn.execute("SHOW statement_timeout")
        row = await cursor.fetchone()
        assert row is not None
        return str(row[0])

    async def scenario() -> list[str]:
        customer_id = new_id("c")
        euro = Money("EUR", 1, 0)

        def order() -> c.PlaceOrder:
            return c.PlaceOrder(new_id("o"), customer_id, (c.OrderLine("p-1", 1, euro),))

        async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
            return [
                await run(conn, c.RegisterCustomer(customer_id, "Ada", "ada@example.com", Money("EUR", 100, 0)), 10_000),
                await run(conn, order(), 500),
                await run(conn, order(), 9_990),
                await run(conn, c.ReserveCredit(customer_id, 1, euro, str(uuid.uuid4())), 2_000),
                await run(conn, order(), 2_000),
                await run(conn, order(), 9_990),
            ]

    steps = [timeouts.timeout_step(ms) for ms in (10_000, 500, 9_990, 2_000, 2_000, 9_990)]
    assert asyncio.run(scenario()) == [f"{step}ms" for step in steps]
    assert steps[1] < steps[0] and steps[3] < steps[2]  # each change really changed it
