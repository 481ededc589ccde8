"""PostgreSQL crashes under load: nothing acknowledged is lost, retries have one effect, health
tells the truth, and the pipeline converges once the database is back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2

from server.devstack.embedded import EmbeddedPostgres
from server.platform.migrations import upgrade
from tests.e2e.client import commands, new_id, place_request, register
from tests.harness import Stack, health_status, serving, wait_until

pytestmark = pytest.mark.e2e
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg")
    upgrade(server.start())
    yield server
    server.stop()


def test_a_database_crash_under_load_loses_nothing_acknowledged(
    own_postgres: EmbeddedPostgres, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack(own_postgres.url, nats_url, tmp_path)
    try:
        crash_under_load(stack, own_postgres)
    finally:
        stack.stop_all()


def crash_under_load(stack: Stack, own_postgres: EmbeddedPostgres) -> None:
    for role in ("command-server", "relay", "projector"):
        stack.start(role)
    wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    acknowledged: list[str] = []
    unexpected: list[grpc.RpcError] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            request = place_request(new_id("o"), customer_id)
            while not stop.is_set():  # the same request, request_id included, until it is answered
                try:
                    acknowledged.append(cmd.PlaceOrder(request, timeout=2).order_id)
                    break
                except grpc.RpcError as error:
                    if error.code() not in RETRYABLE:
                        unexpected.append(error)
                        return
                    stop.wait(0.1)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 30, what="load before the crash")
        own_postgres.kill()
        wait_until(lambda: health_status(stack.command_addr) == health_pb2.HealthCheckResponse.NOT_SERVING,
                   timeout=5, what="NOT_SERVING within 5 s of the crash")
        during = len(acknowledged)
        own_postgres.start()  # crash recovery replays the WAL
        wait_until(lambda: serving(stack.command_addr), timeout=30, what="SERVING again")
        wait_until(lambda: len(acknowledged) >= during + 30, timeout=60, what="load after the crash")
    finally:
        stop.set()
        writer.join()

    assert unexpected == []
    with psycopg.connect(own_postgres.url, autocommit=True) as db:
        stored: dict[str, int] = dict(db.execute("SELECT order_id, version FROM orders").fetchall())
        assert all(stored.get(order_id) == 1 for order_id in acknowledged)  # nothing acknowledged lost
        per_order = db.execute("SELECT aggregate_id, count(*) FROM events WHERE aggregate_type = 'order'"
                               " GROUP BY aggregate_id HAVING count(*) > 1").fetchall()
        assert per_order == []  # every retry of a request had one effect
        wait_until(lambda: db.execute("SELECT count(*) FROM order_summaries").fetchone() == (len(stored),),
                   timeout=60, what="the read model to converge")
