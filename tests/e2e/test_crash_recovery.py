"""kill -9 the relay and the projector while orders flow: nothing lost, nothing doubled."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from server.config import libpq_url
from tests.e2e.client import commands, new_id, place_request, register
from tests.e2e.streams import stream_messages
from tests.harness import Stack, scalar, wait_until

pytestmark = pytest.mark.e2e
ORDERS = 200


def test_relay_and_projector_killed_mid_stream_lose_and_duplicate_nothing(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, nats_url, tmp_path).start_all()
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    try:
        _, cmd = commands(stack.command_addr)
        customer_id = new_id("c")
        register(cmd, customer_id)
        order_ids = [new_id("o") for _ in range(ORDERS)]
        placed: list[str] = []
        lock = threading.Lock()

        def place(order_id: str) -> None:
            cmd.PlaceOrder(place_request(order_id, customer_id), timeout=30)
            with lock:
                placed.append(order_id)

        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(place, order_id) for order_id in order_ids]
            for round_, (projected_at_least, written_at_least) in enumerate([(30, 80), (90, 150)]):
                wait_until(
                    lambda: scalar(db, "SELECT count(*) FROM order_summaries") >= projected_at_least,
                    what=f"round {round_}: {projected_at_least} orders projected",
                )
                stack.kill("relay")
                stack.kill("projector")
                wait_until(lambda: len(placed) >= written_at_least, what=f"{written_at_least} orders placed")
                stack.start("relay")
                stack.start("projector")
            for future in futures:
                future.result()  # every command succeeded, kills or not

        wait_until(
            lambda: scalar(db, "SELECT count(*) FROM order_summaries") == ORDERS, timeout=60, what="all orders projected"
        )
        rows = db.execute("SELECT order_id, version, state, total FROM order_summaries").fetchall()
        assert sorted(r[0] for r in rows) == sorted(order_ids)
        assert {(r[1], r[2]) for r in rows} == {(1, "PLACED")}
        written: dict[str, Decimal] = dict(db.execute("SELECT order_id, total FROM orders").fetchall())
        assert {r[0]: r[3] for r in rows} == written

        events = scalar(db, "SELECT count(*) FROM events")
        assert events == ORDERS + 1
        wait_until(lambda: scalar(db, "SELECT count(*) FROM events WHERE published_at IS NULL") == 0, what="outbox drained")
        assert stream_messages(nats_url) == events  # each event in the stream exactly once
        assert scalar(db, "SELECT count(*) FROM applied_versions") == events
    finally:
        db.close()
        stack.stop_all()
