"""The fulfilment saga's throughput: closed loops that each place an order and wait until a
WatchOrders stream shows it CONFIRMED, beside PlaceOrder alone (the same pipeline without a saga)
in the same run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from bench.load import Measurement, channel, closed_loop, histogram, order_placer, percentile
from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2

PRODUCTS = 100
LINES = 2
PLENTY = 10**9  # credit (EUR) and units: nothing is ever refused, every order is confirmed
SETTLED = (types_pb2.ORDER_STATE_CONFIRMED, types_pb2.ORDER_STATE_CANCELLED)


async def place_order_alone(command_addr: str, concurrency: int, seconds: float) -> Measurement:
    """PlaceOrder in a closed loop at `concurrency`, answered when the order is written."""
    async with channel(command_addr) as ch:
        commands = pb_grpc.CommandServiceStub(ch)
        placers = [await order_placer(commands, f"alone{n}", LINES) for n in range(concurrency)]
        calls = iter(range(10**12))
        return await closed_loop("place_order", lambda: placers[next(calls) % concurrency](), concurrency, seconds)


async def placed_to_confirmed(command_addr: str, query_addr: str, concurrency: int, seconds: float,
                              say: Callable[[str], None]) -> Measurement:
    """Workers that each place an order and wait for its CONFIRMED on one WatchOrders stream of
    the tenant's orders: the whole path, command to saga to read model."""
    async with channel(command_addr) as ch, channel(query_addr) as qch:
        commands = pb_grpc.CommandServiceStub(ch)
        run = uuid.uuid4().hex[:6]
        products = [f"bench-{run}-p{i}" for i in range(PRODUCTS)]
        customers = [f"bench-{run}-c{i}" for i in range(concurrency)]
        say(f"saga: {len(customers)} customers with credit, {len(products)} products in stock ...")
        await asyncio.gather(*(commands.AddStock(pb.AddStockRequest(request_id=str(uuid.uuid4()), product_id=p,
                                                                    quantity=PLENTY), timeout=30) for p in products))
        await asyncio.gather(*(commands.RegisterCustomer(pb.RegisterCustomerRequest(
            request_id=str(uuid.uuid4()), customer_id=c, display_name="Bench", email="bench@example.com",
            credit_limit=types_pb2.Money(currency_code="EUR", units=PLENTY)), timeout=30) for c in customers))

        settled: dict[str, asyncio.Future[int]] = {}
        watch = query_grpc.QueryServiceStub(qch).WatchOrders(query_pb.WatchOrdersRequest())

        async def dispatch() -> None:
            async for message in watch:
                summary = message.update.summary
                if message.HasField("update") and summary.state in SETTLED:
                    waiting = settled.pop(summary.order_id, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(summary.state)

        listening = asyncio.create_task(dispatch())
        latencies: list[float] = []
        cancelled = errors = 0
        stop_at = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal cancelled, errors
            customer = customers[n]
            for i in range(10**12):
                start = time.perf_counter()
                if start >= stop_at:
                    return
                order_id = f"{customer}-{i}"
                done = asyncio.get_running_loop().create_future()
                settled[order_id] = done
                lines = [types_pb2.OrderLine(product_id=products[(n * 7 + i * LINES + k) % PRODUCTS], quantity=1,
                                             unit_price=types_pb2.Money(currency_code="EUR", units=9))
                         for k in range(LINES)]
                try:
                    await commands.PlaceOrder(pb.PlaceOrderRequest(request_id=str(uuid.uuid4()), order_id=order_id,
                                                                   customer_id=customer, lines=lines), timeout=10)
                    state = await asyncio.wait_for(done, timeout=60)
                except (grpc.aio.AioRpcError, TimeoutError):
                    errors += 1
                    settled.pop(order_id, None)
                    continue
                if state != types_pb2.ORDER_STATE_CONFIRMED:
                    cancelled += 1
                    continue
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
        watch.cancel()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    ms = sorted(x * 1000 for x in latencies)
    return Measurement("placed_to_confirmed", concurrency, len(ms), errors + cancelled, round(elapsed, 3),
                       round(len(ms) / elapsed, 1), round(percentile(ms, 0.50), 3), round(percentile(ms, 0.99), 3),
                       round(percentile(ms, 0.999), 3), histogram(ms))


def report(alone: Measurement, saga: Measurement) -> dict[str, Any]:
    return {
        "concurrency": saga.concurrency,
        "lines_per_order": LINES,
        "place_order_per_s": alone.rate, "place_order_p50_ms": alone.p50_ms, "place_order_p99_ms": alone.p99_ms,
        "confirmed_per_s": saga.rate, "placed_to_confirmed_p50_ms": saga.p50_ms,
        "placed_to_confirmed_p99_ms": saga.p99_ms, "confirmed": saga.calls, "not_confirmed": saga.errors,
    }
