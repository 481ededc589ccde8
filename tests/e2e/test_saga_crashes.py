"""Exactly once under crashes: 500 orders over 20 customers and 10 products with too little credit
and stock for all of them, driven by two saga processes of which one is killed with SIGKILL every
1-2 seconds and started again. Every order ends CONFIRMED or CANCELLED; every customer's reserved
credit and every product's reserved units are exactly the sums over its confirmed orders; and no
step had more than one effect."""

from __future__ import annotations

import collections
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import events_pb2, types_pb2
from tests.e2e.client import commands, eur
from tests.harness import Stack, wait_until

pytestmark = pytest.mark.e2e

ORDERS = 500
CUSTOMERS = 20
PRODUCTS = 10
SAGAS = ("saga-a", "saga-b")


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("logs"),
                    extra_env={"ORDERS_SAGA_DEADLINE_SECONDS": "120"}).start_all()
    for name in SAGAS:
        running.start("saga", name)
    yield running
    running.stop_all()


def test_sigkilled_saga_processes_lose_and_double_nothing(stack: Stack, db: psycopg.Connection[Any]) -> None:
    rng = random.Random(21)
    _, cmd = commands(stack.command_addr)
    customers = [f"soak-c{i}" for i in range(CUSTOMERS)]
    products = [f"soak-p{i}" for i in range(PRODUCTS)]
    for customer_id in customers:
        cmd.RegisterCustomer(cmd_pb.RegisterCustomerRequest(
            request_id=f"soak-reg-{customer_id}", customer_id=customer_id, display_name="Soak", email="s@example.com",
            credit_limit=eur(400)), timeout=10)
    for product_id in products:
        cmd.AddStock(cmd_pb.AddStockRequest(request_id=f"soak-add-{product_id}", product_id=product_id, quantity=80),
                     timeout=10)
    orders = [cmd_pb.PlaceOrderRequest(
        request_id=f"soak-place-{n}", order_id=f"soak-o{n}", customer_id=rng.choice(customers),
        lines=[types_pb2.OrderLine(product_id=p, quantity=rng.randint(1, 4), unit_price=eur(rng.randint(1, 20)))
               for p in rng.sample(products, rng.randint(1, 3))]) for n in range(ORDERS)]

    killer_rng = random.Random(7)
    kills = 0
    with ThreadPoolExecutor(8) as pool:
        placing = [pool.submit(cmd.PlaceOrder, order, timeout=30) for order in orders]
        next_kill = time.monotonic() + killer_rng.uniform(1, 2)
        deadline = time.monotonic() + 300
        while unfinished(db) and time.monotonic() < deadline:
            if time.monotonic() >= next_kill:
                victim = killer_rng.choice(SAGAS)
                stack.kill(victim, signal.SIGKILL)
                stack.start("saga", victim)
                kills += 1
                next_kill = time.monotonic() + killer_rng.uniform(1, 2)
            time.sleep(0.1)
        for placed in placing:
            placed.result()
    assert kills >= 5
    wait_until(lambda: not unfinished(db), timeout=120, what="every saga finished")

    states = dict(db.execute("SELECT order_id, state FROM orders WHERE order_id LIKE 'soak-o%'").fetchall())
    sagas = dict(db.execute("SELECT order_id, state FROM sagas WHERE order_id LIKE 'soak-o%'").fetchall())
    assert len(states) == len(sagas) == ORDERS
    assert set(sagas.values()) <= {"CONFIRMED", "CANCELLED"}
    assert states == sagas
    confirmed = {order_id for order_id, state in states.items() if state == "CONFIRMED"}
    assert 0 < len(confirmed) < ORDERS  # scarce enough to refuse some, plentiful enough to confirm some

    credit = collections.Counter[str]()
    units = collections.Counter[str]()
    for order in orders:
        if order.order_id in confirmed:
            for line in order.lines:
                credit[order.customer_id] += line.quantity * line.unit_price.units
                units[line.product_id] += line.quantity
    reserved_credit = {c: Decimal(r) for c, r in db.execute(
        "SELECT customer_id, credit_reserved FROM customers WHERE customer_id LIKE 'soak-c%'").fetchall()}
    reserved_units = dict(db.execute("SELECT product_id, reserved FROM products WHERE product_id LIKE 'soak-p%'").fetchall())
    assert reserved_credit == {c: Decimal(credit[c]) for c in customers}
    assert reserved_units == {p: units[p] for p in products}

    # One effect per step: every request id of the saga made exactly one event, and no order had
    # two events of one kind on one aggregate (a step sent twice under two ids would show there).
    effects = collections.Counter[str]()
    per_order = collections.Counter[tuple[str, str, str]]()
    for (payload,) in db.execute("SELECT payload FROM events WHERE event_type <> 'CustomerRegistered'"
                                 " AND event_type <> 'StockAdded' AND event_type <> 'OrderPlaced'"):
        env = events_pb2.Envelope.FromString(payload)
        if env.actor != "orders-saga":
            continue
        effects[env.request_id] += 1
        kind = env.WhichOneof("payload") or ""
        order_id = getattr(env, kind).order_id
        per_order[(order_id, env.event_type, env.aggregate_id)] += 1
    assert effects and max(effects.values()) == 1
    assert max(per_order.values()) == 1


def unfinished(db: psycopg.Connection[Any]) -> int:
    placed = db.execute("SELECT count(*) FROM orders WHERE order_id LIKE 'soak-o%'").fetchone()
    done = db.execute("SELECT count(*) FROM sagas WHERE order_id LIKE 'soak-o%' AND state IN ('CONFIRMED', 'CANCELLED')"
                      ).fetchone()
    assert placed is not None and done is not None
    return ORDERS - int(done[0]) if placed[0] else ORDERS
