"""Delivery the projector must survive: events out of order and twice, poison messages, a handler
that fails until fixed, and a pause; while it all happens, other orders keep flowing."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import events_pb2
from server.config import libpq_url
from server.platform import messaging
from server.platform.process import free_port
from tests.e2e.client import commands, new_id, place_request, register
from tests.e2e.streams import envelope, publish
from tests.e2e.streams import garbage as undecodable
from tests.harness import Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e
FAULTY = new_id("o-faulty")
METRICS_ADDR = f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with a projector whose handler fails for FAULTY (the fault the tests later fix),
    gaps that give up after 3 deliveries, and metrics on."""
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("logs"), extra_env={
        "ORDERS_PROJECTOR_FAULT_AGGREGATES": FAULTY,
        "ORDERS_PROJECTOR_MAX_GAP_DELIVERIES": "3",
    })
    for role in ("command-server", "query-server", "relay"):
        running.start(role)
    running.start("projector", METRICS_ADDR=METRICS_ADDR)
    wait_until(lambda: running.alive() and serving(running.command_addr) and serving(running.query_addr),
               what="the stack to serve")
    yield running
    running.stop_all()


def orders(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`orders <args>` as the operator runs it: with the fix, i.e. without the injected fault."""
    return stack.cli(*args, timeout=120, unset=("ORDERS_PROJECTOR_FAULT",))


def subject(order_id: str) -> str:
    return messaging.subject_for("default", "order", order_id, 16)


def test_events_out_of_order_and_twice_end_at_v3_and_never_go_backwards(stack: Stack, db: psycopg.Connection) -> None:
    order_id = new_id("o-ooo")
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(libpq_url(stack.database_url), autocommit=True) as conn:
            while True:
                last_round = done.is_set()  # one more read after v3 was seen, so `seen` ends with it
                row = conn.execute("SELECT version FROM order_summaries WHERE order_id = %s", (order_id,)).fetchone()
                if row is not None:
                    seen.append(int(row[0]))
                if last_round:
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        v1, v2, v3 = (envelope(order_id, v).SerializeToString() for v in (1, 2, 3))
        publish(stack.nats_url, [(subject(order_id), v3), (subject(order_id), v1), (subject(order_id), v2),
                                 (subject(order_id), v2)])
        wait_until(lambda: db.execute("SELECT version FROM order_summaries WHERE order_id = %s", (order_id,))
                   .fetchone() == (3,), timeout=30, what="v3 applied")
    finally:
        done.set()
        watcher.join()
    state = db.execute("SELECT state, version FROM order_summaries WHERE order_id = %s", (order_id,)).fetchone()
    assert state == ("SHIPPED", 3)
    assert seen and seen[-1] == 3, seen
    assert seen == sorted(seen), "a row went backwards"
    assert scalar(db, "SELECT units_ordered FROM product_sales WHERE product_id = 'p-direct'") == 2  # not doubled
    assert scalar(db, "SELECT shipped_count FROM customer_orders WHERE customer_id = 'c-direct'") == 1
    assert scalar(db, "SELECT count(*) FROM dead_letters WHERE aggregate_id = %s", order_id) == 0


def test_poison_is_parked_counted_and_replayable_while_other_orders_flow(stack: Stack, db: psycopg.Connection) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    garbage, unknown, gap = new_id("o-garbage"), new_id("o-unknown"), new_id("o-gap")
    no_payload = events_pb2.Envelope(event_id=str(uuid.uuid4()), aggregate_type="order", aggregate_id=unknown,
                                     aggregate_version=1).SerializeToString()
    publish(stack.nats_url, [(subject(garbage), undecodable()), (subject(unknown), no_payload),
                             (subject(gap), envelope(gap, 2).SerializeToString())])
    # A real order whose handler fails (FAULTY), and an event of it that must park behind it.
    cmd.PlaceOrder(place_request(FAULTY, customer_id), timeout=10)
    cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=FAULTY, expected_version=1), timeout=10)

    # Other orders still reach the read model within 5 s each.
    for _ in range(10):
        order_id = new_id("o")
        began = time.monotonic()
        cmd.PlaceOrder(place_request(order_id, customer_id), timeout=10)
        wait_until(lambda: db.execute("SELECT 1 FROM order_summaries WHERE order_id = %s", (order_id,)).fetchone(),
                   timeout=5, what="another order projected under 5 s")
        assert time.monotonic() - began < 5

    wait_until(lambda: scalar(db, "SELECT count(*) FROM dead_letters WHERE status = 'parked'") == 5, timeout=30,
               what="five dead letters (garbage, unknown, gap, faulty v1, faulty v2 behind it)")
    reasons: dict[str, str] = dict(db.execute("SELECT aggregate_id || ':' || coalesce(aggregate_version, 0), reason FROM dead_letters").fetchall())
    assert reasons == {f"{garbage}:0": "undecodable", f"{unknown}:0": "unknown_type", f"{gap}:2": "gap",
                       f"{FAULTY}:1": "handler_failed", f"{FAULTY}:2": "parked_behind"}
    assert scalar(db, "SELECT headers->>'traceparent' FROM dead_letters WHERE aggregate_id = %s", gap)
    assert db.execute("SELECT 1 FROM order_summaries WHERE order_id = %s", (FAULTY,)).fetchone() is None

    # Counted: in `orders status` and in the metrics.
    status = orders(stack, "status")
    assert status.returncode == 0 and "dead_letters: 5" in status.stdout, status.stdout + status.stderr
    wait_until(lambda: "orders_projector_dead_letters 5.0" in urllib.request.urlopen(
        f"http://{METRICS_ADDR}/metrics", timeout=2).read().decode(), timeout=20, what="metric")

    listed = orders(stack, "dlq", "list")
    assert listed.returncode == 0 and listed.stdout.count("\n") == 5
    head = scalar(db, "SELECT id FROM dead_letters WHERE aggregate_id = %s AND aggregate_version = 1", FAULTY)
    shown = orders(stack, "dlq", "show", str(head))
    assert '"reason": "handler_failed"' in shown.stdout and "injected handler fault" in shown.stdout

    # Given the fix (the CLI runs without the fault), a dry run changes nothing, a replay applies both.
    dry = orders(stack, "dlq", "replay", str(head), "--dry-run")
    assert "(dry run)" in dry.stdout and "replayed" in dry.stdout
    assert scalar(db, "SELECT count(*) FROM dead_letters WHERE status = 'parked'") == 5
    replayed = orders(stack, "dlq", "replay", str(head))
    assert replayed.returncode == 0 and replayed.stdout.count("replayed") == 2, replayed.stdout
    assert db.execute("SELECT state, version FROM order_summaries WHERE order_id = %s", (FAULTY,)).fetchone() == ("CONFIRMED", 2)

    # Garbage can only be discarded; the gap still waits for v1.
    garbage_id = scalar(db, "SELECT id FROM dead_letters WHERE aggregate_id = %s", garbage)
    assert "discarded" in orders(stack, "dlq", "discard", str(garbage_id)).stdout
    still = orders(stack, "dlq", "replay", "--all")
    assert "still parked" in still.stdout and "still waiting for version 1" in still.stdout
    assert scalar(db, "SELECT count(*) FROM dead_letters WHERE status = 'parked'") == 2


def test_pause_holds_the_position_and_resume_continues(stack: Stack, db: psycopg.Connection) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    assert orders(stack, "projector", "pause").returncode == 0
    order_id = new_id("o")
    cmd.PlaceOrder(place_request(order_id, customer_id), timeout=10)
    wait_until(lambda: "paused: True" in (s := orders(stack, "status").stdout) and "lag_events: 0" not in s,
               timeout=30, what="status shows paused with lag")
    assert db.execute("SELECT 1 FROM order_summaries WHERE order_id = %s", (order_id,)).fetchone() is None
    assert orders(stack, "projector", "resume").returncode == 0
    wait_until(lambda: db.execute("SELECT 1 FROM order_summaries WHERE order_id = %s", (order_id,)).fetchone(),
               timeout=30, what="projected after resume")
