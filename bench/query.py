"""`orders bench query`: the read side on one query-server.

Watch: `watchers` WatchOrders streams (one customer each) while commands arrive at a fixed
rate (open loop); the delay is from the command's acknowledgement to the watcher receiving that
version (clamped at 0 when the update wins the race with the ack). Queries: GetOrderSummary and
ListOrders throughput beside grpc.health.v1.Health/Check on the same query-server, a no-op RPC
that shares everything but the work, in the same run. Scaling: GetOrderSummary throughput over
several connections to one port served by 1, then by 2 query-server processes
(ORDERS_QUERY_SERVERS), each on a fresh stack.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import load
from bench.load import Measurement, closed_loop, order_line, order_placer, percentile
from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import command_service_pb2_grpc as cmd_grpc
from orders.v1 import query_service_pb2 as pb
from orders.v1 import query_service_pb2_grpc as pb_grpc

# Well within a query server's streams per connection (ORDERS_WATCH_MAX_PER_CONNECTION, 100).
STREAMS_PER_CHANNEL = 50


@dataclass(frozen=True)
class WatchFigures:
    watchers: int
    target_rate: float
    commands: int
    # Commands not acknowledged, by status code: past what the stack sustains, the command server
    # refuses calls beyond its limit in progress (RESOURCE_EXHAUSTED), and gRPC sheds calls queued
    # before the server picks them up (grpc.server.max_pending_requests) with CANCELLED.
    refused: dict[str, int]
    updates: int
    missing: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    # The projection pipeline alone, for comparison: ack to readable with the consistency token,
    # sampled on every 10th command. The watch delay minus this is the fan-out's share.
    readable_p50_ms: float
    readable_p99_ms: float


def _channel(addr: str) -> grpc.aio.Channel:
    # A subchannel (connection) of its own, so the streams spread over several connections.
    return load.channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])


async def _gather_bounded(calls: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def watch_stage(
    command_addr: str, query_addr: str, watchers: int, rate: float, seconds: float, progress: Callable[[str], None]
) -> tuple[WatchFigures, list[str]]:
    run_id = uuid.uuid4().hex[:8]
    customers = [f"bw-{run_id}-{i}" for i in range(watchers)]
    acked: dict[tuple[str, int], float] = {}
    received: dict[tuple[str, int], float] = {}
    first_seen: dict[str, asyncio.Event] = {c: asyncio.Event() for c in customers}
    order_ids: list[str] = []
    readable: list[float] = []
    refused: collections.Counter[str] = collections.Counter()

    async with load.channel(command_addr) as command_channel:
        commands = cmd_grpc.CommandServiceStub(command_channel)
        reader_channel = _channel(query_addr)
        reader = pb_grpc.QueryServiceStub(reader_channel)

        async def place(customer_id: str) -> None:
            order_id = f"{customer_id}-{uuid.uuid4().hex[:6]}"
            request = cmd_pb.PlaceOrderRequest(request_id=str(uuid.uuid4()), order_id=order_id, customer_id=customer_id,
                                               lines=[order_line(len(order_ids)), order_line(len(order_ids) + 1)])
            try:
                reply = await commands.PlaceOrder(request, timeout=30)
            except grpc.aio.AioRpcError as error:
                refused[error.code().name] += 1
                return
            acked[(order_id, reply.version)] = at = time.perf_counter()
            order_ids.append(order_id)
            if len(order_ids) % 10 == 0:
                await reader.GetOrderSummary(pb.GetOrderSummaryRequest(
                    order_id=order_id, consistency_token=reply.consistency_token), timeout=30)
                readable.append((time.perf_counter() - at) * 1000)

        progress(f"  registering {watchers} customers ...")
        def register(customer_id: str) -> Awaitable[Any]:
            return commands.RegisterCustomer(cmd_pb.RegisterCustomerRequest(
                request_id=str(uuid.uuid4()), customer_id=customer_id, display_name="Bench", email="b@example.com"),
                timeout=30)

        await _gather_bounded([functools.partial(register, c) for c in customers], 32)

        channels = [_channel(query_addr) for _ in range(max(1, -(-watchers // STREAMS_PER_CHANNEL)))]

        async def watch(i: int, customer_id: str) -> None:
            stub = pb_grpc.QueryServiceStub(channels[i % len(channels)])
            call = stub.WatchOrders(pb.WatchOrdersRequest(customer_id=customer_id), wait_for_ready=True)
            async for message in call:
                if message.HasField("update"):
                    now = time.perf_counter()
                    summary = message.update.summary
                    received.setdefault((summary.order_id, summary.version), now)
                    first_seen[customer_id].set()

        tasks = [asyncio.create_task(watch(i, c)) for i, c in enumerate(customers)]
        try:
            progress(f"  {watchers} watchers open; one order each to warm up ...")
            await _gather_bounded([functools.partial(place, c) for c in customers], 32)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_seen.values())), 120)
            acked.clear()
            received.clear()
            readable.clear()
            refused.clear()

            progress(f"  commands at {rate:.0f}/s for {seconds:.0f}s, delay from ack to update ...")
            pending: list[asyncio.Task[None]] = []
            began = time.perf_counter()
            n = 0
            while (due := began + n / rate) < began + seconds:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                pending.append(asyncio.create_task(place(random.choice(customers))))
                n += 1
            await asyncio.gather(*pending)
            settle_until = time.perf_counter() + 10
            while any(k not in received for k in acked) and time.perf_counter() < settle_until:
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in [*channels, reader_channel]:
                await channel.close()

    delays = sorted(max(0.0, received[k] - acked[k]) * 1000 for k in acked if k in received)
    figures = WatchFigures(
        watchers=watchers, target_rate=rate, commands=len(acked), refused=dict(refused), updates=len(delays),
        missing=len(acked) - len(delays), p50_ms=round(percentile(delays, 0.5), 3),
        p99_ms=round(percentile(delays, 0.99), 3), max_ms=round(delays[-1] if delays else float("nan"), 3),
        readable_p50_ms=round(percentile(sorted(readable), 0.5), 3),
        readable_p99_ms=round(percentile(sorted(readable), 0.99), 3),
    )
    return figures, order_ids


async def query_stage(query_addr: str, order_ids: list[str], concurrency: int, seconds: float,
                      progress: Callable[[str], None]) -> list[Measurement]:
    async with load.channel(query_addr) as channel:
        queries = pb_grpc.QueryServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        customers = sorted({o.rsplit("-", 1)[0] for o in order_ids})

        def noop() -> Awaitable[Any]:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        def get() -> Awaitable[Any]:
            return queries.GetOrderSummary(pb.GetOrderSummaryRequest(order_id=random.choice(order_ids)), timeout=10)

        def list_orders() -> Awaitable[Any]:
            return queries.ListOrders(pb.ListOrdersRequest(customer_id=random.choice(customers), page_size=10), timeout=10)

        results = []
        for name, call in (("noop", noop), ("get_order", get), ("list_orders", list_orders)):
            progress(f"  {name:<12} concurrency {concurrency:>3} for {seconds:.0f}s ...")
            results.append(await closed_loop(name, call, concurrency, seconds))
        return results


# Connections of the scaling stage: SO_REUSEPORT spreads connections, not calls, over the
# processes on the port, so the load needs several for two processes to share it.
SCALING_CONNECTIONS = 8
SCALING_ORDERS = 200


async def scaling_stage(command_addr: str, query_addr: str, servers: int, concurrency: int, seconds: float,
                        progress: Callable[[str], None]) -> Measurement:
    """GetOrderSummary in a closed loop over SCALING_CONNECTIONS connections to `query_addr`,
    which `servers` query-server processes share, on orders read back once with their tokens."""
    async with load.channel(command_addr) as command_channel:
        place = await order_placer(cmd_grpc.CommandServiceStub(command_channel), "scale", lines=2)
        placed = [await place() for _ in range(SCALING_ORDERS)]
    channels = [_channel(query_addr) for _ in range(SCALING_CONNECTIONS)]
    try:
        stubs = [pb_grpc.QueryServiceStub(ch) for ch in channels]
        for n, reply in enumerate(placed):  # each in the read model before the load starts
            await stubs[n % len(stubs)].GetOrderSummary(pb.GetOrderSummaryRequest(
                order_id=reply.order_id, consistency_token=reply.consistency_token), timeout=30)
        calls = iter(range(10**12))

        def get() -> Awaitable[Any]:
            n = next(calls)
            return stubs[n % len(stubs)].GetOrderSummary(
                pb.GetOrderSummaryRequest(order_id=placed[n % len(placed)].order_id), timeout=10)

        progress(f"  get_order    concurrency {concurrency:>3} over {len(channels)} connections, "
                 f"{servers} query server(s), for {seconds:.0f}s ...")
        return await closed_loop(f"get_order_{servers}_servers", get, concurrency, seconds)
    finally:
        for ch in channels:
            await ch.close()


def report(watch: WatchFigures, queries: list[Measurement]) -> dict[str, Any]:
    by = {m.name: m for m in queries}
    return {
        "watch": asdict(watch),
        "queries": [asdict(m) for m in queries],
        "ratios": {f"{name}_vs_noop": round(by[name].rate / by["noop"].rate, 3) for name in ("get_order", "list_orders")},
    }


def table(watch: WatchFigures) -> str:
    refused = "".join(f", {count} {code}" for code, count in sorted(watch.refused.items()))
    return (f"watch: {watch.watchers} watchers, {watch.commands} commands acknowledged at {watch.target_rate:.0f}/s"
            f"{refused}, {watch.updates} updates ({watch.missing} missing); ack->update p50 {watch.p50_ms:.1f} ms, "
            f"p99 {watch.p99_ms:.1f} ms, max {watch.max_ms:.1f} ms; ack->readable (token) p50 "
            f"{watch.readable_p50_ms:.1f} ms, p99 {watch.readable_p99_ms:.1f} ms")
