"""The relay when NATS cannot take events: the stream is full, or the server is down."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import psycopg
import pytest

from server.devstack.embedded import EmbeddedNats
from tests.e2e.client import commands, new_id, place_request, register
from tests.e2e.streams import STREAM, read_stream
from tests.harness import Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e
# `make test` takes a short outage; `make test-outage` the three minutes of the fault plan.
OUTAGE_SECONDS = float(os.environ.get("ORDERS_TEST_NATS_OUTAGE_SECONDS", "15"))


@pytest.fixture
def stack(database_url: str, own_nats: EmbeddedNats, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(database_url, own_nats.url, tmp_path)
    running.start("command-server")
    wait_until(lambda: running.alive() and serving(running.command_addr), what="command-server SERVING")
    yield running
    running.stop_all()


def test_a_full_stream_never_marks_rows_published_and_takes_them_all_when_space_returns(
    stack: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    first_id = scalar(db, "SELECT COALESCE(max(id), 0) FROM events")
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    for _ in range(49):
        cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    events = scalar(db, f"SELECT count(*) FROM events WHERE id > {first_id}")
    stack.start("relay", "relay-small", ORDERS_STREAM_MAX_MSGS="30")

    published = f"SELECT count(*) FROM events WHERE published_at IS NOT NULL AND id > {first_id}"
    wait_until(lambda: scalar(db, published) == 30, what="the 30 messages the stream takes")
    # A projector of the same deployment starting meanwhile must leave the stream's limit alone.
    stack.start("projector", ORDERS_STREAM_MAX_MSGS="30")
    projected = f"SELECT count(*) FROM order_summaries WHERE customer_id = '{customer_id}'"
    wait_until(lambda: scalar(db, projected) == 29, what="the projector to apply the 29 published orders")
    refusals = stack.log("relay-small").count("publish refused")
    wait_until(lambda: stack.log("relay-small").count("publish refused") > refusals, what="the relay to retry")
    assert scalar(db, published) == 30  # retried, still refused, still not marked
    assert len(read_stream(own_nats.url)) == 30
    # The stream is the operator's once it exists: no relay lifts its limit, an operator does.
    stack.start("relay", "relay-roomy")
    wait_until(lambda: "max_msgs: wanted -1, the stream has 30" in stack.log("relay-roomy"),
               what="the roomy relay to report the stream's limit")
    assert scalar(db, published) == 30
    lift_limit(own_nats.url)

    wait_until(lambda: scalar(db, "SELECT count(*) FROM events WHERE published_at IS NULL") == 0,
               what="every event to be published")
    assert events == 50
    assert len({s.msg_id for s in read_stream(own_nats.url)}) == events == len(read_stream(own_nats.url))


def lift_limit(url: str) -> None:
    """What an operator's `nats stream edit --max-msgs=-1` does."""
    async def edit() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            config = (await js.stream_info(STREAM)).config
            await js.update_stream(dataclasses.replace(config, max_msgs=-1))
        finally:
            await nc.close()

    asyncio.run(edit())


@pytest.mark.timeout(OUTAGE_SECONDS + 300)  # the outage on top of the usual budget (`make test-outage`: 180 s)
def test_commands_keep_succeeding_through_a_nats_outage_and_every_event_arrives_once(
    stack: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    first_id = scalar(db, "SELECT COALESCE(max(id), 0) FROM events")  # earlier tests used another stream
    stack.start("relay")
    stack.start("projector")
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    stop = threading.Event()
    failures: list[grpc.RpcError] = []
    placed: list[str] = []

    def write() -> None:
        while not stop.is_set():
            try:
                placed.append(cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10).order_id)
            except grpc.RpcError as error:
                failures.append(error)
            stop.wait(0.05)  # an offered load of ~20 commands/s, not a busy loop

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(placed) > 20, what="load before the outage")
        own_nats.stop()
        during = len(placed)
        # Hold the fault: the outage is a span of time, and commands must keep succeeding all through
        # it. No condition ends it early, so this is a deliberate sleep, not a wait for something.
        time.sleep(OUTAGE_SECONDS)
        assert len(placed) > during  # commands went on while NATS was down
        own_nats.start()
        wait_until(lambda: len(placed) > during + 20, what="load after the outage")
    finally:
        stop.set()
        writer.join()

    assert failures == []
    wait_until(lambda: scalar(db, "SELECT count(*) FROM events WHERE published_at IS NULL") == 0,
               timeout=120, what="the backlog to drain")
    ours = {str(r[0]) for r in db.execute(f"SELECT event_id FROM events WHERE id > {first_id}").fetchall()}
    stored = [s for s in read_stream(own_nats.url) if s.msg_id in ours]  # not earlier tests' leftovers
    assert len(stored) == len(ours) == len({s.msg_id for s in stored})
    orders = list(placed)
    wait_until(lambda: db.execute("SELECT count(*) FROM order_summaries WHERE order_id = ANY(%s)", (orders,))
               .fetchone() == (len(orders),), timeout=120, what="the projector to catch up")
