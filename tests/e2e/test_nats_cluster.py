"""The stack on a three-node JetStream cluster with the events stream at three replicas and two
projectors sharing the partitions: the node that leads the stream killed with SIGKILL under load
and restarted, and a projector killed; and a node removed for good."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from server.devstack.embedded import EmbeddedNatsCluster
from server.platform.process import free_port
from tests.e2e.client import commands, eur, new_id, place_request, queries, register, rid
from tests.e2e.streams import read_stream
from tests.harness import ROOT, Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e
T = TypeVar("T")

# About 2,000 orders keep the leader test near a minute on two busy cores.
ORDERS = int(os.environ.get("ORDERS_TEST_CLUSTER_ORDERS", "2000"))
# The stack's projectors, each a process of its own, sharing the partitions of the event subjects.
PROJECTORS = ("projector-a", "projector-b")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsCluster]:
    nodes = EmbeddedNatsCluster(tmp_path_factory.mktemp("cluster"), nodes=3)
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def stack(database_url: str, cluster: EmbeddedNatsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(database_url, cluster.url, tmp_path_factory.mktemp("logs"),
                    extra_env={"ORDERS_STREAM_REPLICAS": "3"})
    for role in ("command-server", "query-server", "relay"):
        running.start(role)
    for name in PROJECTORS:
        running.start("projector", name)
    wait_until(lambda: running.alive() and serving(running.command_addr), what="command-server SERVING")
    wait_until(lambda: running.alive() and serving(running.query_addr), what="query-server SERVING")
    yield running
    running.stop_all()


def stream_status(stack: Stack) -> dict[str, Any]:
    """The events stream as `orders outbox status --json` reports it. A refusal (e.g. no leader
    yet to answer) is an error wait_until tries again after, not a failed assertion."""
    result = stack.cli("outbox", "status", "--json", timeout=60)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    stream: dict[str, Any] = json.loads(result.stdout)["stream"]
    return stream


def leader(stack: Stack) -> str | None:
    return stream_status(stack).get("leader")


@dataclass
class Writers:
    """Threads placing orders, each confirmed in one case out of three: what every acknowledged
    order must look like in the read models, and every failed call with its time."""

    command_addr: str
    total: int
    threads: int = 8
    customers: list[str] = field(default_factory=lambda: [new_id("c") for _ in range(10)])
    acknowledged: dict[str, tuple[str, int, Decimal, str]] = field(default_factory=dict)
    failures: list[tuple[float, grpc.RpcError]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel, self.cmd = commands(self.command_addr)
        for customer_id in self.customers:
            register(self.cmd, customer_id)
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self._write) for _ in range(self.threads)]

    def start(self) -> Writers:
        for worker in self.workers:
            worker.start()
        return self

    def join(self) -> None:
        for worker in self.workers:
            worker.join()

    def _write(self) -> None:
        while (i := next(self.numbers)) < self.total:
            order_id, customer_id = new_id("o"), self.customers[i % len(self.customers)]
            lines = [types_pb2.OrderLine(product_id=f"p-{(i + k) % 7}", quantity=1 + (i + k) % 3,
                                         unit_price=eur(2 + k, 250_000_000 * ((i + k) % 4))) for k in range(1 + i % 3)]
            total = sum((line.quantity * (line.unit_price.units + Decimal(line.unit_price.nanos) / 10**9)
                         for line in lines), Decimal(0))
            try:
                version = self.cmd.PlaceOrder(place_request(order_id, customer_id, *lines), timeout=30).version
                state = "PLACED"
                if i % 3 == 0:
                    version = self.cmd.ConfirmOrder(pb.ConfirmOrderRequest(
                        request_id=rid(), order_id=order_id, expected_version=version), timeout=30).version
                    state = "CONFIRMED"
            except grpc.RpcError as error:
                with self.lock:
                    self.failures.append((time.time(), error))
                continue
            with self.lock:
                self.acknowledged[order_id] = (customer_id, version, total, state)


def settled(read: Callable[[], T], wanted: T, timeout: float, what: str) -> T:
    """What `read` returns once it equals `wanted`, or at the deadline (then the caller's assert
    shows the difference)."""
    try:
        wait_until(lambda: read() == wanted, timeout=timeout, what=what)
    except AssertionError:
        pass
    return read()


def assert_read_models_hold_exactly(db: psycopg.Connection[Any], writers: Writers) -> None:
    """Each acknowledged order once, at its acknowledged version and total; each customer's
    dashboard counts each order once, in its state, with its exact total."""
    def summaries() -> dict[str, tuple[Any, ...]]:
        rows = db.execute("SELECT order_id, customer_id, version, total, state FROM order_summaries"
                          " WHERE customer_id = ANY(%s)", (writers.customers,)).fetchall()
        assert len(rows) == len({r[0] for r in rows})
        return {r[0]: tuple(r[1:]) for r in rows}

    assert settled(summaries, writers.acknowledged, 120, "the order summaries") == writers.acknowledged
    wanted: dict[str, tuple[Any, ...]] = {}
    for customer_id in writers.customers:
        mine = [a for a in writers.acknowledged.values() if a[0] == customer_id]
        placed, confirmed = [a[2] for a in mine if a[3] == "PLACED"], [a[2] for a in mine if a[3] == "CONFIRMED"]
        wanted[customer_id] = (len(placed), sum(placed, Decimal(0)), len(confirmed), sum(confirmed, Decimal(0)))

    def dashboards() -> dict[str, tuple[Any, ...]]:
        rows = db.execute("SELECT customer_id, placed_count, placed_value, confirmed_count, confirmed_value"
                          " FROM customer_orders WHERE customer_id = ANY(%s)", (writers.customers,)).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    assert settled(dashboards, wanted, 60, "the customers' dashboards") == wanted


def assert_every_event_is_in_the_stream_once(db: psycopg.Connection[Any], stack: Stack, first_id: int) -> None:
    wait_until(lambda: scalar(db, f"SELECT count(*) FROM events WHERE id > {first_id} AND published_at IS NULL") == 0,
               timeout=120, what="every event to be published")
    ours = {str(r[0]) for r in db.execute(f"SELECT event_id FROM events WHERE id > {first_id}").fetchall()}
    copies = Counter(s.msg_id for s in read_stream(stack.nats_url) if s.msg_id in ours)
    assert set(copies) == ours and set(copies.values()) == {1}


def test_orders_placed_while_the_stream_leader_and_a_projector_are_killed_reach_the_read_models_once_each(
    stack: Stack, cluster: EmbeddedNatsCluster, db: psycopg.Connection[Any], record_property: Any
) -> None:
    first_id = scalar(db, "SELECT COALESCE(max(id), 0) FROM events")
    old_leader = wait_until(lambda: leader(stack), what="the stream to have a leader")
    writers = Writers(stack.command_addr, ORDERS).start()
    try:
        wait_until(lambda: len(writers.acknowledged) >= ORDERS // 4, timeout=120, what="load before the kill")
        killed_at = time.time()
        cluster.node(old_leader).kill()
        # The failover: from the SIGKILL to the first event written after it that the stream
        # acknowledged (the relay marks an event published right after its PubAck).
        failover = wait_until(lambda: scalar(
            db, "SELECT EXTRACT(EPOCH FROM min(published_at)) - %s FROM events"
                " WHERE created_at > to_timestamp(%s) AND published_at IS NOT NULL", killed_at, killed_at),
            timeout=60, what="a PubAck from the stream's new leader")
        new_leader = wait_until(lambda: leader(stack), what="a new leader")
        assert new_leader != old_leader
        wait_until(lambda: len(writers.acknowledged) >= ORDERS // 2, timeout=120, what="load without the old leader")
        cluster.node(old_leader).start()
        # And separately, a projector killed under load: the other takes its partitions, and it
        # comes back to take its share again.
        wait_until(lambda: len(writers.acknowledged) >= 3 * ORDERS // 4, timeout=120, what="load before the projector kill")
        stack.kill(PROJECTORS[0], signal.SIGKILL)
        stack.start("projector", PROJECTORS[0])
    finally:
        writers.join()
    record_property("failover_seconds", float(failover))
    print(f"\nfailover (SIGKILL of the stream leader to the next PubAck): {float(failover):.2f}s")

    assert writers.failures == []  # commands never wait on NATS: not one failed
    assert len(writers.acknowledged) == ORDERS
    assert_every_event_is_in_the_stream_once(db, stack, first_id)
    assert_read_models_hold_exactly(db, writers)
    _, query = queries(stack.query_addr)
    order_id, (_, version, total, _) = next(reversed(writers.acknowledged.items()))
    summary = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=order_id), timeout=10).summary
    assert (summary.version, summary.total.units + Decimal(summary.total.nanos) / 10**9) == (version, total)
    assert stack.alive()  # every role rode through it
    restarted = wait_until(lambda: (s := stream_status(stack))["current_replicas"] == 3 and s,
                           timeout=60, what="the restarted node to catch up")
    assert {p["name"] for p in restarted["peers"]} | {restarted["leader"]} == {"nats-1", "nats-2", "nats-3"}


def test_a_node_removed_for_good_leaves_two_that_go_on_and_the_stream_reports_the_missing_replica(
    stack: Stack, cluster: EmbeddedNatsCluster, db: psycopg.Connection[Any]
) -> None:
    first_id = scalar(db, "SELECT COALESCE(max(id), 0) FROM events")
    before = wait_until(lambda: (s := stream_status(stack))["current_replicas"] == 3 and s,
                        timeout=60, what="three current replicas")
    removed = before["peers"][0]["name"]  # a follower: the leader's loss is the test above
    cluster.node(removed).stop()

    writers = Writers(stack.command_addr, 200).start()
    writers.join()

    assert writers.failures == []
    assert_every_event_is_in_the_stream_once(db, stack, first_id)
    assert_read_models_hold_exactly(db, writers)
    after = wait_until(lambda: (s := stream_status(stack))["current_replicas"] == 2 and s,
                       timeout=60, what="the stream to count the missing replica out")
    missing = next(p for p in after["peers"] if p["name"] == removed)
    assert missing["offline"] or not missing["current"]
    assert after["replicas"] == 3 and after["differences"] == []
    text = stack.cli("outbox", "status", timeout=60).stdout
    assert "3 replicas" in text and "2 of 3 current" in text
    assert any(line.strip().startswith(f"replica {removed}:") and ("OFFLINE" in line or "BEHIND" in line)
               for line in text.splitlines()), text


def test_orders_up_with_three_nats_nodes_keeps_the_stream_on_all_three(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env.update(ORDERS_DATA_DIR=str(tmp_path), COMMAND_ADDR=f"127.0.0.1:{free_port()}",
               QUERY_ADDR=f"127.0.0.1:{free_port()}", ORDERS_METRICS_BASE_PORT="0", ORDERS_ROLES="command-server,relay",
               ORDERS_NATS_NODES="3")
    banner = tmp_path / "out.log"
    with banner.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", "up"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: "Orders is up." in banner.read_text(), timeout=120, what="the banner")
        assert "(events stream: 3 replicas)" in banner.read_text()
        # The operator's environment, as the banner says to set it.
        line = next(line for line in banner.read_text().splitlines() if "export DATABASE_URL=" in line)
        operator = dict(word.split("=", 1) for word in shlex.split(line.strip())[1:])
        assert operator["ORDERS_STREAM_REPLICAS"] == "3" and operator["NATS_URL"].count(",") == 2

        def status() -> dict[str, Any]:
            result = subprocess.run([sys.executable, "-m", "server", "outbox", "status", "--json"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=60,
                                    env={**os.environ, **operator})
            if result.returncode != 0:  # not up yet: wait_until tries again
                raise RuntimeError(result.stdout + result.stderr)
            stream: dict[str, Any] = json.loads(result.stdout)["stream"]
            return stream

        stream = wait_until(lambda: (s := status())["exists"] and s["current_replicas"] == 3 and s,
                            timeout=60, what="the relay to create the stream on three servers")
        assert (stream["replicas"], stream["differences"]) == (3, [])
        assert {p["name"] for p in stream["peers"]} | {stream["leader"]} == {"nats-1", "nats-2", "nats-3"}
        assert all((tmp_path / node / "jetstream").is_dir() for node in ("nats-1", "nats-2", "nats-3"))
        servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "nats-server" in p.name()]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert len(servers) == 3
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert alive == []
