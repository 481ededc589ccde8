"""Optimistic concurrency and idempotency under real concurrent calls."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import query_service_pb2 as query_pb
from tests.e2e.client import (
    ErrorInfo,
    aio_channel,
    commands,
    detail,
    new_id,
    place_request,
    queries,
    register,
    status_of,
)
from tests.harness import Stack

pytestmark = pytest.mark.e2e


async def _gather(addr: str, calls: int, make: object) -> list[object]:
    async with aio_channel(addr) as channel:
        stub = pb_grpc.CommandServiceStub(channel)
        return await asyncio.gather(*(make(stub, i) for i in range(calls)), return_exceptions=True)  # type: ignore[operator]


def test_32_concurrent_confirms_with_the_same_expected_version_have_exactly_one_winner(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    register(cmd, customer_id)
    placed = cmd.PlaceOrder(place_request(order_id, customer_id))

    results = asyncio.run(_gather(stack.command_addr, 32, lambda stub, i: stub.ConfirmOrder(
        pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=placed.version), timeout=30)))

    winners = [r for r in results if isinstance(r, pb.ConfirmOrderResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and winners[0].version == placed.version + 1
    assert len(losers) == 31
    assert {e.code() for e in losers} == {grpc.StatusCode.ABORTED}
    assert {detail(status_of(e), ErrorInfo).reason for e in losers} == {"VERSION_CONFLICT"}
    _, query = queries(stack.query_addr)
    final = query.GetOrderSummary(
        query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=winners[0].consistency_token), timeout=10)
    assert final.summary.version == placed.version + 1


def test_50_concurrent_identical_place_orders_make_one_order_and_identical_responses(
    stack: Stack, db: psycopg.Connection
) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    request = place_request(new_id("o"), customer_id)

    results = asyncio.run(_gather(stack.command_addr, 50, lambda stub, i: stub.PlaceOrder(request, timeout=30)))

    assert all(isinstance(r, pb.PlaceOrderResponse) for r in results), results
    assert len({r.SerializeToString() for r in results}) == 1  # type: ignore[attr-defined]
    assert results[0].version == 1  # type: ignore[attr-defined]
    effects = db.execute("SELECT count(*) FROM events WHERE aggregate_id = %s", (request.order_id,)).fetchone()
    assert effects == (1,)
    _, query = queries(stack.query_addr)
    got = query.GetOrderSummary(
        query_pb.GetOrderSummaryRequest(order_id=request.order_id, consistency_token=results[0].consistency_token), timeout=10)  # type: ignore[attr-defined]
    assert got.summary.version == 1
