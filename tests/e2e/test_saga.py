"""The fulfilment saga against the real processes: an order placed is confirmed when its credit
and every line's stock could be reserved, and cancelled with a readable reason otherwise, with
exactly what was reserved released; a caller's CancelOrder of a confirmed order releases it too;
a deadline fires while the command server does not answer, and the saga compensates once it does;
duplicate and out-of-order deliveries change nothing."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from typing import Any

import grpc
import nats
import psycopg
import pytest

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import events_pb2, types_pb2
from orders.v1 import query_service_pb2 as query_pb
from server.platform.messaging import SUBJECT_PREFIX
from server.platform.process import free_port
from server.saga.model import request_id
from tests.e2e.client import commands, eur, new_id, queries
from tests.e2e.otlp import Collector, by_trace
from tests.harness import Stack, sample, scalar, scrape, wait_until

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 6


@pytest.fixture(scope="module")
def saga_metrics() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, collector: Collector, saga_metrics: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("logs"),
                    extra_env={"ORDERS_SAGA_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
                               "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    running.start_all()
    running.start("saga", METRICS_ADDR=saga_metrics)
    yield running
    running.stop_all()


def customer_with_credit(stack: Stack, limit: int) -> str:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    cmd.RegisterCustomer(cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                        display_name="Grace", email="grace@example.com",
                                                        credit_limit=eur(limit)), timeout=10)
    return customer_id


def product_with_stock(stack: Stack, units: int) -> str:
    _, cmd = commands(stack.command_addr)
    product_id = new_id("p")
    cmd.AddStock(cmd_pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, quantity=units), timeout=10)
    return product_id


def place(stack: Stack, customer_id: str, *lines: tuple[str, int, int]) -> str:
    """Places an order of (product, quantity, unit price in EUR) lines."""
    _, cmd = commands(stack.command_addr)
    order_id = new_id("o")
    cmd.PlaceOrder(cmd_pb.PlaceOrderRequest(
        request_id=new_id("r"), order_id=order_id, customer_id=customer_id,
        lines=[types_pb2.OrderLine(product_id=p, quantity=q, unit_price=eur(price)) for p, q, price in lines]),
        timeout=10)
    return order_id


def saga_state(db: psycopg.Connection[Any], order_id: str) -> str | None:
    row = db.execute("SELECT state FROM sagas WHERE order_id = %s", (order_id,)).fetchone()
    return None if row is None else str(row[0])


def finished(db: psycopg.Connection[Any], order_id: str, timeout: float = 30) -> str:
    def done() -> str | None:
        state = saga_state(db, order_id)
        return state if state in ("CONFIRMED", "CANCELLED", "STUCK") else None

    return wait_until(done, timeout=timeout, what=f"saga of {order_id} finished")


def summary(stack: Stack, order_id: str) -> query_pb.OrderSummary:
    _, query = queries(stack.query_addr)

    def current() -> query_pb.OrderSummary | None:
        try:
            found: query_pb.OrderSummary = query.GetOrderSummary(
                query_pb.GetOrderSummaryRequest(order_id=order_id), timeout=5).summary
        except grpc.RpcError:
            return None
        return found if found.state in (types_pb2.ORDER_STATE_CONFIRMED, types_pb2.ORDER_STATE_CANCELLED) else None

    return wait_until(current, what=f"{order_id} settled in the read model")


def credit_reserved(db: psycopg.Connection[Any], customer_id: str) -> float:
    return float(scalar(db, "SELECT credit_reserved FROM customers WHERE customer_id = %s", customer_id))


def stock_reserved(db: psycopg.Connection[Any], product_id: str) -> int:
    return int(scalar(db, "SELECT reserved FROM products WHERE product_id = %s", product_id))


def envelopes(db: psycopg.Connection[Any], *aggregate_ids: str) -> list[events_pb2.Envelope]:
    rows = db.execute("SELECT payload FROM events WHERE aggregate_id = ANY(%s) ORDER BY id",
                      (list(aggregate_ids),)).fetchall()
    return [events_pb2.Envelope.FromString(row[0]) for row in rows]


def test_an_order_with_credit_and_stock_is_confirmed_and_the_reads_show_the_reservations(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = customer_with_credit(stack, 100)
    first, second = product_with_stock(stack, 10), product_with_stock(stack, 5)
    _, query = queries(stack.query_addr)
    watch = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id), timeout=60)
    # The first heartbeat says the stream is caught up (the customer has no order yet): from then
    # on it sees each change, so the order is placed only after it.
    assert next(watch).HasField("heartbeat")
    order_id = place(stack, customer_id, (first, 2, 10), (second, 3, 5))

    seen: list[int] = []
    for message in watch:
        if message.HasField("update") and message.update.summary.order_id == order_id:
            seen.append(message.update.summary.state)
            if message.update.summary.state != types_pb2.ORDER_STATE_PLACED:
                break
    watch.cancel()
    assert seen == [types_pb2.ORDER_STATE_PLACED, types_pb2.ORDER_STATE_CONFIRMED]

    customer = wait_until(lambda: (c := query.GetCustomer(query_pb.GetCustomerRequest(customer_id=customer_id),
                                                          timeout=5).customer).credit_reserved.units == 35 and c)
    assert (customer.credit_available.units, customer.credit_limit.units) == (65, 100)
    products = [query.GetProduct(query_pb.GetProductRequest(product_id=p), timeout=5).product for p in (first, second)]
    assert [(p.on_hand, p.reserved, p.available) for p in products] == [(10, 2, 8), (5, 3, 2)]
    assert summary(stack, order_id).saga_state == query_pb.SAGA_STATE_CONFIRMED


def test_each_step_is_caused_by_the_event_before_it_in_the_orders_correlation_by_the_saga(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = customer_with_credit(stack, 100)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 1, 10))
    assert finished(db, order_id) == "CONFIRMED"

    events = {e.event_type: e for e in envelopes(db, order_id, customer_id, product_id)
              if e.event_type in ("OrderPlaced", "CreditReserved", "StockReserved", "OrderConfirmed")}
    placed = events["OrderPlaced"]
    chain = [events["CreditReserved"], events["StockReserved"], events["OrderConfirmed"]]
    assert [e.causation_id for e in chain] == [placed.event_id, chain[0].event_id, chain[1].event_id]
    assert {e.correlation_id for e in chain} == {placed.correlation_id}
    assert {e.actor for e in chain} == {"orders-saga"}
    assert [e.request_id for e in chain] == [request_id("default", order_id, step)
                                              for step in ("credit", "stock:0", "confirm")]


def test_every_step_is_a_span_in_the_orders_trace(stack: Stack, db: psycopg.Connection[Any],
                                                 collector: Collector) -> None:
    customer_id = customer_with_credit(stack, 100)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 1, 10))
    assert finished(db, order_id) == "CONFIRMED"

    def whole_trace() -> set[tuple[str, str]] | None:
        spans = collector.spans()
        placed = next((s for s in spans if s.name == "/orders.v1.CommandService/PlaceOrder"
                       and s.attributes.get("orders.aggregate_id") == order_id), None)
        if placed is None:
            return None
        names = {(s.service, s.name) for s in by_trace(spans, placed.trace_id)}
        return names if {("orders-saga", "saga confirm"),
                         ("orders-command-server", "/orders.v1.CommandService/ConfirmOrder")} <= names else None

    names = wait_until(whole_trace, what="the saga's spans in the order's trace")
    assert {("orders-saga", f"saga {step}") for step in ("credit", "stock:0", "confirm")} <= names
    assert {("orders-command-server", f"/orders.v1.CommandService/{method}")
            for method in ("PlaceOrder", "ReserveCredit", "ReserveStock", "ConfirmOrder")} <= names


def test_credit_short_cancels_with_credit_limit_and_reserves_no_stock(stack: Stack, db: psycopg.Connection[Any]) -> None:
    customer_id = customer_with_credit(stack, 10)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 2, 10))

    assert finished(db, order_id) == "CANCELLED"
    cancelled = summary(stack, order_id)
    assert cancelled.state == types_pb2.ORDER_STATE_CANCELLED
    assert (cancelled.cancellation.reason, cancelled.cancellation.note) == (
        types_pb2.CANCELLATION_REASON_CREDIT_DECLINED, "CREDIT_LIMIT")
    assert cancelled.saga_state == query_pb.SAGA_STATE_CANCELLED
    assert (credit_reserved(db, customer_id), stock_reserved(db, product_id)) == (0, 0)
    kinds = [e.event_type for e in envelopes(db, product_id)]
    assert kinds == ["StockAdded"]


def test_stock_short_on_the_second_line_releases_the_first_line_and_the_credit(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = customer_with_credit(stack, 1000)
    plenty, scarce = product_with_stock(stack, 10), product_with_stock(stack, 1)
    order_id = place(stack, customer_id, (plenty, 4, 10), (scarce, 2, 10))

    assert finished(db, order_id) == "CANCELLED"
    cancelled = summary(stack, order_id)
    assert (cancelled.cancellation.reason, cancelled.cancellation.note) == (
        types_pb2.CANCELLATION_REASON_OUT_OF_STOCK, f"OUT_OF_STOCK:{scarce}")
    assert (credit_reserved(db, customer_id), stock_reserved(db, plenty), stock_reserved(db, scarce)) == (0, 0, 0)
    # Exactly what was reserved was released, in reverse, and nothing of the scarce product.
    kinds = [(e.event_type, e.aggregate_id) for e in envelopes(db, customer_id, plenty, scarce)
             if e.event_type not in ("CustomerRegistered", "StockAdded")]
    assert kinds == [("CreditReserved", customer_id), ("StockReserved", plenty), ("StockReleased", plenty),
                     ("CreditReleased", customer_id)]


def test_an_unknown_product_cancels_naming_it(stack: Stack, db: psycopg.Connection[Any]) -> None:
    customer_id = customer_with_credit(stack, 100)
    order_id = place(stack, customer_id, ("p-nowhere", 1, 10))

    assert finished(db, order_id) == "CANCELLED"
    assert summary(stack, order_id).cancellation.note == "UNKNOWN_PRODUCT:p-nowhere"
    assert credit_reserved(db, customer_id) == 0


def test_a_callers_cancel_of_a_confirmed_order_releases_its_credit_and_stock(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = customer_with_credit(stack, 100)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 3, 10))
    assert finished(db, order_id) == "CONFIRMED"
    assert (credit_reserved(db, customer_id), stock_reserved(db, product_id)) == (30, 3)

    _, cmd = commands(stack.command_addr)
    cmd.CancelOrder(cmd_pb.CancelOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=2,
                                              reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST), timeout=10)

    wait_until(lambda: saga_state(db, order_id) == "CANCELLED", what="the saga released what it held")
    assert (credit_reserved(db, customer_id), stock_reserved(db, product_id)) == (0, 0)
    wait_until(lambda: summary(stack, order_id).state == types_pb2.ORDER_STATE_CANCELLED, what="cancel projected")
    assert summary(stack, order_id).cancellation.reason == types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST
    cancels = [e for e in envelopes(db, order_id) if e.event_type == "OrderCancelled"]
    assert len(cancels) == 1  # the caller's; the saga sent none of its own


def test_duplicate_and_out_of_order_deliveries_change_nothing(stack: Stack, db: psycopg.Connection[Any]) -> None:
    customer_id = customer_with_credit(stack, 100)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 2, 10))
    assert finished(db, order_id) == "CONFIRMED"
    version = scalar(db, "SELECT version FROM sagas WHERE order_id = %s", order_id)
    rows = db.execute("SELECT e.payload, e.event_type, e.aggregate_type, e.aggregate_id FROM events e "
                      "WHERE aggregate_id = ANY(%s) ORDER BY id", ([order_id, customer_id, product_id],)).fetchall()

    async def redeliver() -> None:
        nc = await nats.connect(stack.nats_url)
        js = nc.jetstream()
        # Every event of the saga again, last first, then in order: new message ids, so the
        # stream keeps them, as a republish after a lost store would.
        for payload, _, aggregate_type, aggregate_id in [*reversed(rows), *rows]:
            subject = f"{SUBJECT_PREFIX}.default.{aggregate_type}.0.{aggregate_id}"
            await js.publish(subject, bytes(payload), headers={"Nats-Msg-Id": new_id("again")})
        await nc.drain()

    asyncio.run(redeliver())
    sentinel = customer_with_credit(stack, 1)  # an order behind them: once it is done, they were read
    later = place(stack, sentinel, (product_id, 1, 1))
    finished(db, later)

    assert scalar(db, "SELECT version FROM sagas WHERE order_id = %s", order_id) == version
    assert saga_state(db, order_id) == "CONFIRMED"
    assert (credit_reserved(db, customer_id), stock_reserved(db, product_id)) == (20, 3)
    assert scalar(db, "SELECT count(*) FROM sagas WHERE tenant_id = 'default' AND order_id = %s", order_id) == 1


def test_a_deadline_fires_while_the_command_server_is_paused_and_the_saga_compensates_after(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = customer_with_credit(stack, 100)
    product_id = product_with_stock(stack, 10)
    # The relay held back, the order is placed; then the command server stops answering and the
    # saga learns of the order: its first step cannot reach its target.
    stack.procs["relay"].send_signal(signal.SIGSTOP)
    try:
        order_id = place(stack, customer_id, (product_id, 1, 10))
        stack.procs["command-server"].send_signal(signal.SIGSTOP)
    finally:
        stack.procs["relay"].send_signal(signal.SIGCONT)
    try:
        wait_until(lambda: saga_state(db, order_id) == "COMPENSATING", timeout=DEADLINE_SECONDS + 10,
                   what="the deadline fired")
        data = scalar(db, "SELECT data FROM sagas WHERE order_id = %s", order_id)
        fired = next(at for at, step, outcome in data["history"] if step == "deadline")
        started = data["history"][0][0]
        assert DEADLINE_SECONDS <= fired - started < DEADLINE_SECONDS + 1.0
    finally:
        stack.procs["command-server"].send_signal(signal.SIGCONT)

    assert finished(db, order_id, timeout=60) == "CANCELLED"
    cancelled = summary(stack, order_id)
    assert (cancelled.cancellation.reason, cancelled.cancellation.note) == (
        types_pb2.CANCELLATION_REASON_DEADLINE_EXCEEDED, "DEADLINE")
    assert credit_reserved(db, customer_id) == 0


def test_saga_list_show_and_retry_tell_an_operator_what_each_saga_did(stack: Stack, db: psycopg.Connection[Any]) -> None:
    customer_id = customer_with_credit(stack, 5)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 1, 10))
    assert finished(db, order_id) == "CANCELLED"

    listed = stack.cli("saga", "list", "--state", "CANCELLED", "--json")
    assert listed.returncode == 0, listed.stderr
    assert order_id in {saga["order_id"] for saga in json.loads(listed.stdout)}
    shown = stack.cli("saga", "show", order_id)
    assert shown.returncode == 0, shown.stderr
    steps = [line.split()[1:3] for line in shown.stdout.splitlines() if line.startswith("    ")]
    assert steps == [["credit", "sent"], ["credit", "refused:CREDIT_LIMIT"], ["cancel", "sent"], ["cancel", "done"]]
    assert "CANCELLED (CREDIT_LIMIT)" in shown.stdout
    retried = stack.cli("saga", "retry", order_id)
    assert retried.returncode == 0 and "nothing to retry" in retried.stdout
    missing = stack.cli("saga", "show", "o-none")
    assert missing.returncode == 1 and "no saga for order 'o-none'" in missing.stderr


def test_a_saga_stuck_on_a_refused_release_is_finished_by_orders_saga_retry_once_the_cause_is_fixed(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = customer_with_credit(stack, 100)
    product_id = product_with_stock(stack, 10)
    order_id = place(stack, customer_id, (product_id, 2, 10))
    assert finished(db, order_id) == "CONFIRMED"
    # A change made by hand behind the saga's back: the product's reservation is gone.
    db.execute("UPDATE products SET reserved = 0 WHERE product_id = %s", (product_id,))
    _, cmd = commands(stack.command_addr)
    cmd.CancelOrder(cmd_pb.CancelOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=2,
                                              reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST), timeout=10)

    wait_until(lambda: saga_state(db, order_id) == "STUCK", what="the refused release")
    shown = stack.cli("saga", "show", order_id)
    assert "STUCK (CANCELLED_BY_CALLER)" in shown.stdout
    assert ["release-stock:0", "refused:STOCK_RESERVED"] in [line.split()[1:3] for line in shown.stdout.splitlines()]
    assert order_id in {s["order_id"] for s in json.loads(stack.cli("saga", "list", "--state", "STUCK", "--json").stdout)}

    db.execute("UPDATE products SET reserved = 2 WHERE product_id = %s", (product_id,))  # the fix
    retried = stack.cli("saga", "retry", order_id)
    assert retried.returncode == 0 and "release-stock:0 is sent again now" in retried.stdout, retried.stdout

    wait_until(lambda: saga_state(db, order_id) == "CANCELLED", what="the saga finished after the retry")
    assert (credit_reserved(db, customer_id), stock_reserved(db, product_id)) == (0, 0)


def test_the_saga_counts_states_compensations_and_deadlines(stack: Stack, saga_metrics: str) -> None:
    text = scrape(saga_metrics)
    assert sample(text, "orders_saga_entered_total", state="CONFIRMED") >= 1
    assert sample(text, "orders_saga_compensations_total", reason="CREDIT_LIMIT") >= 1
    assert sample(text, "orders_saga_compensations_total", reason="OUT_OF_STOCK") >= 1
    assert sample(text, "orders_saga_deadlines_fired_total") >= 1
    assert sample(text, "orders_saga_step_seconds_count", command="ReserveCredit") >= 1
    assert sample(text, "orders_saga_answers_total", command="ReserveCredit", answer="refused") >= 1
    wait_until(lambda: sample(scrape(saga_metrics), "orders_saga_sagas", state="STUCK") == 0
               and "orders_saga_sagas{" in scrape(saga_metrics), what="the saga states counted")


def test_the_saga_exits_naming_its_token_setting_when_it_has_none(stack: Stack) -> None:
    proc = stack.cli("saga", env={**stack.env(), "ORDERS_SAGA_TOKEN_FILE": ""}, timeout=60)
    assert proc.returncode == 2
    assert "ORDERS_SAGA_TOKEN_FILE is not set" in proc.stderr
