"""The outbox relay under crashes, late commits, competition and hot aggregates."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import events_pb2
from server.config import libpq_url
from tests.e2e.client import ErrorInfo, commands, detail, new_id, place_request, register, status_of
from tests.e2e.streams import read_stream, stream_messages
from tests.harness import Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e


def unpublished(db: psycopg.Connection) -> int:
    return int(scalar(db, "SELECT count(*) FROM events WHERE published_at IS NULL"))


@pytest.fixture
def fresh(database_url: str, nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Command server only: each test starts the relays it needs."""
    stack = Stack(database_url, nats_url, tmp_path)
    stack.start("command-server")
    wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
    yield stack
    stack.stop_all()


def relay_logs(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    lines = []
    for path in stack.log_dir.glob(f"{prefix}*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def test_a_relay_that_dies_between_publish_and_mark_loses_and_duplicates_nothing(
    fresh: Stack, db: psycopg.Connection, nats_url: str
) -> None:
    _, cmd = commands(fresh.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    done = threading.Event()

    def write() -> None:
        for _ in range(150):
            cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=30)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    crashes = 0
    # Each incarnation exits right after a batch is in the stream, before marking it: the first one
    # always, later ones half the time. The next one publishes the same rows again.
    while not (done.is_set() and unpublished(db) == 0):
        chance = "1" if crashes == 0 else "0.5"
        proc = fresh.start("relay", f"relay-{crashes}", ORDERS_RELAY_CRASH_AFTER_PUBLISH=chance)
        try:
            # The first one is awaited until it crashes, however slowly it starts on a busy
            # machine: the duplicates the test looks for come from it.
            proc.wait(timeout=60 if crashes == 0 else 2)
            crashes += 1
        except subprocess.TimeoutExpired:
            fresh.kill(f"relay-{crashes}", 15)
            crashes += 1
    writer.join()

    events = scalar(db, "SELECT count(*) FROM events")
    assert events == 151
    stored = read_stream(nats_url)
    assert len(stored) == events and len({s.msg_id for s in stored}) == events
    assert sum(int(line.get("duplicates", 0)) for line in relay_logs(fresh, "relay-")) > 0
    assert any(p.returncode == 3 for p in fresh.procs.values())  # it did die mid-batch


def test_an_event_committed_after_higher_ids_is_still_published(
    fresh: Stack, db: psycopg.Connection, database_url: str, nats_url: str
) -> None:
    fresh.start("relay")
    _, cmd = commands(fresh.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    product_id = new_id("p")
    late = events_pb2.Envelope(
        event_id=str(uuid.uuid4()), event_type="StockAdded", schema_version=1, tenant_id="default",
        aggregate_type="product", aggregate_id=product_id, aggregate_version=1,
        stock_added=events_pb2.StockAdded(product_id=product_id, quantity=1),
    )
    with psycopg.connect(libpq_url(database_url)) as slow:  # a transaction left open for a while
        late_id = scalar(
            slow,
            "INSERT INTO events (event_id, tenant_id, aggregate_type, aggregate_id, aggregate_version, event_type, payload)"
            " VALUES (%s, 'default', 'product', %s, 1, 'StockAdded', %s) RETURNING id",
            late.event_id, product_id, late.SerializeToString(),
        )
        later = [cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10).order_id for _ in range(5)]
        wait_until(lambda: unpublished(db) == 0, what="the later events to be published")
        assert scalar(db, "SELECT min(id) FROM events WHERE aggregate_id = ANY(%s)", later) > late_id
        slow.commit()

    wait_until(lambda: unpublished(db) == 0, what="the late event to be published")
    assert late.event_id in {s.msg_id for s in read_stream(nats_url)}


def test_two_relays_and_32_writers_on_20_hot_aggregates_keep_version_order(
    fresh: Stack, db: psycopg.Connection, nats_url: str
) -> None:
    fresh.start("relay", "relay-a")
    fresh.start("relay", "relay-b")
    _, cmd = commands(fresh.command_addr)
    products = [new_id("p") for _ in range(20)]
    for product_id in products:
        cmd.AddStock(pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, expected_version=0, quantity=1))
    successes: defaultdict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        known = {p: 1 for p in products}
        for _ in range(15):
            product_id = rng.choice(products)
            while True:  # read-modify-write: on a conflict, retry at the version the server reports
                try:
                    reply = cmd.AddStock(pb.AddStockRequest(
                        request_id=new_id("r"), product_id=product_id, expected_version=known[product_id], quantity=1),
                        timeout=30)
                    known[product_id] = reply.version
                    with lock:
                        successes[product_id] += 1
                    break
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.ABORTED, error
                    known[product_id] = int(detail(status_of(error), ErrorInfo).metadata["actual"])

    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(writer, i) for i in range(32)]
        wait_until(lambda: scalar(db, "SELECT count(*) FROM events WHERE published_at IS NOT NULL"
                                      " AND aggregate_id = ANY(%s)", products) > 150, what="publishing under way")
        active = next(name for name in ("relay-a", "relay-b") if "active relay" in fresh.log(name))
        fresh.kill(active)  # the standby takes over
        for future in futures:
            future.result()

    wait_until(lambda: unpublished(db) == 0, timeout=60, what="the standby to drain the outbox")
    standby = "relay-b" if active == "relay-a" else "relay-a"
    assert "active relay" in fresh.log(standby)
    versions: dict[str, list[int]] = defaultdict(list)
    for stored in read_stream(nats_url):
        if stored.envelope.aggregate_id in products:
            versions[stored.envelope.aggregate_id].append(stored.envelope.aggregate_version)
    for product_id in products:
        assert versions[product_id] == list(range(1, successes[product_id] + 2)), product_id


def test_a_hung_active_relay_loses_its_lease_to_the_standby_and_nothing_is_lost_or_doubled(
    fresh: Stack, db: psycopg.Connection, nats_url: str
) -> None:
    lease = "3"  # seconds; the default is 10
    fresh.start("relay", "relay-a", ORDERS_RELAY_LEASE_SECONDS=lease)
    fresh.start("relay", "relay-b", ORDERS_RELAY_LEASE_SECONDS=lease)
    _, cmd = commands(fresh.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    orders: list[str] = []

    def place(n: int) -> None:
        for _ in range(n):
            orders.append(new_id("o"))
            cmd.PlaceOrder(place_request(orders[-1], customer_id), timeout=10)

    place(10)
    wait_until(lambda: unpublished(db) == 0, what="the first orders published")
    hung = next(name for name in ("relay-a", "relay-b") if "active relay" in fresh.log(name))
    standby = "relay-b" if hung == "relay-a" else "relay-a"
    fresh.procs[hung].send_signal(signal.SIGSTOP)  # alive, connected, holding its lock, doing nothing
    try:
        place(10)
        wait_until(lambda: unpublished(db) == 0, timeout=15, what="the standby to take over from the hung relay")
        assert "active relay" in fresh.log(standby)
        assert "ran nothing for longer than its lease" in fresh.log(standby)
        standing_by = fresh.log(hung).count("standby: another relay is active")
    finally:
        fresh.procs[hung].send_signal(signal.SIGCONT)
    # Resumed, it finds its session ended and waits as the standby.
    wait_until(lambda: fresh.log(hung).count("standby: another relay is active") > standing_by,
               what="the resumed relay to stand by")
    place(10)
    wait_until(lambda: unpublished(db) == 0, what="the last orders published")
    placed = [s.envelope.aggregate_id for s in read_stream(nats_url) if s.envelope.aggregate_id in set(orders)]
    assert sorted(placed) == sorted(orders)  # each order's one event in the stream, exactly once


def test_outbox_status_names_the_active_relay_and_republish_is_deduplicated(
    fresh: Stack, db: psycopg.Connection, database_url: str, nats_url: str
) -> None:
    fresh.start("relay")
    _, cmd = commands(fresh.command_addr)
    register(cmd, new_id("c"))
    wait_until(lambda: unpublished(db) == 0, what="the outbox to drain")
    before = stream_messages(nats_url)
    env = {"DATABASE_URL": database_url, "PATH": ""}  # the operator's CLI needs the database only

    status_run = fresh.cli("outbox", "status", env=env)
    republish_run = fresh.cli("outbox", "republish", "--since", "1970-01-01T00:00:00Z", env=env)
    assert status_run.returncode == 0 and republish_run.returncode == 0, status_run.stderr + republish_run.stderr
    status, republished = status_run.stdout, republish_run.stdout

    assert "unpublished events: 0" in status and "orders-relay" in status
    assert int(republished.split()[0]) == scalar(db, "SELECT count(*) FROM events")
    wait_until(lambda: unpublished(db) == 0, what="the republished events to be sent")
    assert stream_messages(nats_url) == before  # within the duplicate window the stream keeps one copy
