"""Read-your-writes: a command's consistency token makes the next read include its write, even
while the projector keeps stalling (SIGSTOP/SIGCONT)."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from orders.v1 import query_service_pb2 as query_pb
from tests.e2e.client import commands, new_id, place_request, queries, register
from tests.harness import Stack

pytestmark = pytest.mark.e2e
TRIES = 1000
CLIENTS = 8


def test_get_with_the_token_returns_the_order_every_time_while_the_projector_stalls(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    projector = stack.procs["projector"]
    done = threading.Event()

    def stall_projector() -> None:
        """The fault: the projector is frozen for 80 ms out of every 120 ms."""
        try:
            while not done.is_set():
                projector.send_signal(signal.SIGSTOP)
                done.wait(0.08)
                projector.send_signal(signal.SIGCONT)
                done.wait(0.04)
        finally:
            projector.send_signal(signal.SIGCONT)

    def place_then_read(_: int) -> tuple[str, int, str]:
        placed = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
        got = query.GetOrderSummary(
            query_pb.GetOrderSummaryRequest(order_id=placed.order_id, consistency_token=placed.consistency_token),
            timeout=10,
        )
        return placed.order_id, got.summary.version, got.summary.order_id

    staller = threading.Thread(target=stall_projector)
    staller.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(place_then_read, range(TRIES)))
    finally:
        done.set()
        staller.join()

    assert len(results) == TRIES
    assert all(order_id == read_id and version == 1 for order_id, version, read_id in results)
