"""The load every stage applies: closed loops of calls, their measurements and percentiles, and
the PlaceOrder traffic the write and query stages share."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import types_pb2

# The bearer token every call of the bench carries: the fresh stack's dev token, or ORDERS_TOKEN
# with --running; none when the servers run with authentication off.
_token: list[str] = []


def use_token(token: str | None) -> None:
    _token[:] = [token] if token else []


class _Bearer:
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))


# grpc.aio files an interceptor under the first call kind it implements: one class per kind.
class _BearerUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def channel(addr: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A channel whose calls carry the bench's token."""
    return grpc.aio.insecure_channel(addr, options=options, interceptors=[kind(t) for t in _token for kind in (_BearerUnary, _BearerStream)])


@dataclass(frozen=True)
class Measurement:
    name: str
    concurrency: int
    calls: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    histogram: dict[str, list[float]] = field(default_factory=dict)  # for the latency plots


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def closed_loop(name: str, call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float) -> Measurement:
    """`concurrency` workers, each calling again as soon as its call returns, for `seconds`."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while (start := time.perf_counter()) < stop_at:
            try:
                await call()
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return Measurement(
        name, concurrency, len(latencies), errors, round(elapsed, 3), round(len(latencies) / elapsed, 1),
        round(percentile(ms, 0.50), 3), round(percentile(ms, 0.99), 3), round(percentile(ms, 0.999), 3),
        histogram(ms),
    )


def histogram(ms: list[float]) -> dict[str, list[float]]:
    """Counts of latencies in log-spaced buckets from 0.1 ms to 10 s (the last one open)."""
    edges = [0.1 * 10 ** (i / 10) for i in range(51)]
    counts = [0] * 50
    for value in ms:
        index = 0 if value <= edges[0] else min(49, int(10 * math.log10(value / 0.1)))
        counts[index] += 1
    return {"edges_ms": [round(e, 4) for e in edges], "counts": [float(c) for c in counts]}


def order_line(i: int) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(
        product_id=f"p-{i % 50}", quantity=1 + i % 3, unit_price=types_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000)
    )


def customer_registrar(commands: pb_grpc.CommandServiceStub, prefix: str) -> Callable[[], Awaitable[Any]]:
    """A call that registers a new customer each time it is called (a data key made and sealed
    each time, as for every registration)."""
    counter = iter(range(10**12))
    run = uuid.uuid4().hex[:8]

    def register() -> Awaitable[Any]:
        return commands.RegisterCustomer(
            pb.RegisterCustomerRequest(request_id=str(uuid.uuid4()), customer_id=f"{prefix}-{run}-{next(counter)}",
                                       display_name="Bench Customer", email="bench@example.com"), timeout=10)

    return register


async def order_placer(commands: pb_grpc.CommandServiceStub, prefix: str, lines: int,
                       timeout: float = 10) -> Callable[[], Awaitable[Any]]:
    """Registers a customer, then returns a call that places a new order of `lines` lines for
    it each time it is called (`timeout`: each call's deadline in seconds)."""
    customer_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await commands.RegisterCustomer(
        pb.RegisterCustomerRequest(request_id=str(uuid.uuid4()), customer_id=customer_id,
                                   display_name="Bench", email="bench@example.com"), timeout=timeout)
    counter = iter(range(10**12))

    def place() -> Awaitable[Any]:
        i = next(counter)
        request = pb.PlaceOrderRequest(request_id=str(uuid.uuid4()), order_id=f"{customer_id}-{i}",
                                       customer_id=customer_id, lines=[order_line(i + n) for n in range(lines)])
        return commands.PlaceOrder(request, timeout=timeout)

    return place
