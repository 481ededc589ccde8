"""`orders bench overload`: one command server offered more PlaceOrders than it sustains.

First its capacity (closed loop at concurrency 64), then an open loop at `factor` times that for
the same time: how many calls were admitted and at what latency, how many were refused with
RESOURCE_EXHAUSTED (the server's own limit, with details) and how many gRPC cancelled before the
server picked them up; then, with the load gone, the latency of calls at concurrency 1 beside
the same measured before.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench.load import channel, closed_loop, order_placer, percentile
from orders.v1 import command_service_pb2_grpc as pb_grpc


async def overload_stage(command_addr: str, factor: float, seconds: float, progress: Callable[[str], None]) -> dict[str, Any]:
    async with channel(command_addr) as command_channel:
        place = await order_placer(pb_grpc.CommandServiceStub(command_channel), "overload", lines=1)
        progress(f"overload: capacity, closed loop at concurrency 64 for {seconds:.0f}s ...")
        capacity = await closed_loop("capacity", place, 64, seconds)
        before = await closed_loop("before", place, 1, min(seconds, 2.0))
        rate = factor * capacity.rate
        progress(f"overload: offering {rate:.0f}/s ({factor:g} x capacity) for {seconds:.0f}s ...")
        outcomes = await open_loop(place, rate, seconds)
        after = await closed_loop("after", place, 1, min(seconds, 2.0))

    by_status = collections.Counter(code for code, _ in outcomes)
    admitted = sorted(ms for code, ms in outcomes if code == "OK")
    refused = sorted(ms for code, ms in outcomes if code == "RESOURCE_EXHAUSTED")
    return {
        "capacity_per_s": capacity.rate,
        "offered_per_s": round(len(outcomes) / seconds, 1),
        "by_status": dict(by_status),
        "admitted_p50_ms": round(percentile(admitted, 0.5), 1),
        "admitted_p99_ms": round(percentile(admitted, 0.99), 1),
        "refused_p50_ms": round(percentile(refused, 0.5), 1),
        "before_p50_ms": before.p50_ms,
        "after_p50_ms": after.p50_ms,
    }


async def open_loop(call: Callable[[], Awaitable[Any]], rate: float, seconds: float) -> list[tuple[str, float]]:
    """Starts a call every 1/`rate` s for `seconds`, whatever the earlier ones are doing; each
    call's status code name and latency in ms."""
    outcomes: list[tuple[str, float]] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            await call()
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        outcomes.append((code, (time.perf_counter() - started) * 1000))

    calls = []
    began = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        calls.append(asyncio.create_task(one()))
    await asyncio.gather(*calls)
    return outcomes


def table(figures: dict[str, Any]) -> str:
    statuses = ", ".join(f"{code} {count}" for code, count in sorted(figures["by_status"].items()))
    return (f"overload: capacity {figures['capacity_per_s']:.0f}/s, offered {figures['offered_per_s']:.0f}/s: {statuses}\n"
            f"  admitted p50 {figures['admitted_p50_ms']:.1f} ms, p99 {figures['admitted_p99_ms']:.1f} ms; "
            f"refused p50 {figures['refused_p50_ms']:.1f} ms; "
            f"concurrency 1 p50 {figures['before_p50_ms']:.2f} ms before, {figures['after_p50_ms']:.2f} ms after")
