"""Group commit: commands written in one transaction each get their own answer, and a refused one
leaves no trace while its neighbours commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import types_pb2
from server.config import libpq_url
from server.platform.process import free_port
from tests.e2e.client import ErrorInfo, aio_channel, commands, detail, eur, new_id, place_request, status_of
from tests.harness import Stack, sample, scrape, serving, wait_until

pytestmark = pytest.mark.e2e
SLOTS = 2  # ORDERS_GROUP_COMMIT_SLOTS's default: groups in the database at a time when they stall


@pytest.fixture(scope="module")
def server(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A command server alone, with its metrics endpoint."""
    metrics = f"127.0.0.1:{free_port()}"
    stack = Stack(database_url, nats_url, tmp_path_factory.mktemp("group-commit"))
    stack.start("command-server", METRICS_ADDR=metrics)
    wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
    yield stack, metrics
    stack.stop_all()


def _customer(cmd: pb_grpc.CommandServiceStub) -> tuple[str, int]:
    customer_id = new_id("c")
    reply = cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com",
        credit_limit=types_pb2.Money(currency_code="EUR", units=1_000)), timeout=10)
    return customer_id, reply.version


def _reserve(customer_id: str, version: int, request_id: str | None = None) -> pb.ReserveCreditRequest:
    return pb.ReserveCreditRequest(request_id=request_id or new_id("r"), customer_id=customer_id,
                                   expected_version=version, amount=eur(10), order_id=new_id("o"))


def test_a_group_with_a_conflict_a_reused_request_id_and_a_missing_customer_answers_each_on_its_own(
    server: tuple[Stack, str], db: psycopg.Connection[Any]
) -> None:
    stack, metrics = server
    _, cmd = commands(stack.command_addr)
    # Two commands wait on rows this test locks: the first in the one group in the database,
    # the second in a group started beside it once the first has stalled (a slot each). Everything
    # sent meanwhile queues for the group that follows.
    held = [_customer(cmd) for _ in range(SLOTS)]
    contested, contested_version = _customer(cmd)
    buyer, _ = _customer(cmd)
    first_use = place_request(new_id("o"), buyer)
    cmd.PlaceOrder(first_use, timeout=10)
    good = [place_request(new_id("o"), buyer) for _ in range(3)]
    # Both read version v and decide; written together, only the first can win.
    contest = [_reserve(contested, contested_version) for _ in range(2)]
    reused = place_request(new_id("o"), buyer)
    reused.request_id = first_use.request_id
    missing = place_request(new_id("o"), new_id("c"))

    before = scrape(metrics)
    with psycopg.connect(libpq_url(stack.database_url)) as blocker:
        blocker.execute("SELECT 1 FROM customers WHERE customer_id = ANY(%s) FOR UPDATE", ([c for c, _ in held],))

        async def scenario() -> list[Any]:
            async with aio_channel(stack.command_addr) as channel:
                stub = pb_grpc.CommandServiceStub(channel)
                waiting = []
                for customer_id, version in held:  # one at a time, so that each takes a slot of its own
                    waiting.append(asyncio.create_task(_answer(stub.ReserveCredit(_reserve(customer_id, version),
                                                                                  timeout=30))))
                    await _until(lambda: _blocked(db) == len(waiting), f"{len(waiting)} slot(s) to wait on locked rows")
                grouped = [asyncio.create_task(_answer(call)) for call in (
                    *(stub.PlaceOrder(request, timeout=30) for request in good),
                    *(stub.ReserveCredit(request, timeout=30) for request in contest),
                    stub.PlaceOrder(reused, timeout=30),
                    stub.PlaceOrder(missing, timeout=30),
                )]
                await _until(lambda: sample(scrape(metrics), "orders_command_group_queued") == len(grouped),
                             f"all {len(grouped)} commands to queue for one group")
                blocker.rollback()  # the slots free up; the queued commands go in one group
                return await asyncio.gather(*waiting, *grouped)

        results = asyncio.run(scenario())

    held_results, (*placed, first, second, reused_result, missing_result) = results[:SLOTS], results[SLOTS:]
    assert all(isinstance(r, pb.ReserveCreditResponse) for r in held_results), held_results
    assert all(isinstance(r, pb.PlaceOrderResponse) and r.version == 1 for r in placed), placed
    winners = [(req, r) for req, r in zip(contest, (first, second)) if isinstance(r, pb.ReserveCreditResponse)]
    losers = [(req, r) for req, r in zip(contest, (first, second)) if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and winners[0][1].version == contested_version + 1 and len(losers) == 1
    loser_request, loser = losers[0]
    assert loser.code() == grpc.StatusCode.ABORTED
    conflict = detail(status_of(loser), ErrorInfo)
    assert (conflict.reason, conflict.metadata["actual"]) == ("VERSION_CONFLICT", str(contested_version + 1))
    assert isinstance(reused_result, grpc.aio.AioRpcError), reused_result
    assert reused_result.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail(status_of(reused_result), ErrorInfo).reason == "REQUEST_ID_REUSED"
    assert isinstance(missing_result, grpc.aio.AioRpcError), missing_result
    assert missing_result.code() == grpc.StatusCode.FAILED_PRECONDITION

    # One transaction of all seven, after the two held commands, each written alone.
    after = scrape(metrics)
    groups = sample(after, "orders_command_group_size_count") - sample(before, "orders_command_group_size_count")
    written = sample(after, "orders_command_group_size_sum") - sample(before, "orders_command_group_size_sum")
    assert (groups, written) == (SLOTS + 1, SLOTS + len(good) + len(contest) + 2)

    # What committed is exactly what answered OK; the refused left no claim, row or event.
    good_ids = [request.order_id for request in good]
    events = db.execute("SELECT aggregate_id, aggregate_version FROM events WHERE aggregate_id = ANY(%s)",
                        ([*good_ids, contested, reused.order_id, missing.order_id],)).fetchall()
    assert sorted(events) == sorted([*((o, 1) for o in good_ids), (contested, 1), (contested, contested_version + 1)])
    claims = db.execute("SELECT request_id, method FROM idempotency WHERE request_id = ANY(%s)",
                        ([loser_request.request_id, missing.request_id, first_use.request_id],)).fetchall()
    assert claims == [(first_use.request_id, "PlaceOrder")]
    orders = db.execute("SELECT order_id FROM orders WHERE order_id = ANY(%s)",
                        ([reused.order_id, missing.order_id],)).fetchall()
    assert orders == []


async def _answer(call: Any) -> Any:
    """The call's response, or the error it ended with."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return exc


def _blocked(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                     " AND query LIKE '%%FOR NO KEY UPDATE%%'").fetchone()
    return int(row[0]) if row else 0


async def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    """Polls `check` (a blocking call, run off the event loop) until true; fails after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
