"""`orders bench`: measures the service against baselines taken by the same client in the same run.

Write side: PlaceOrder throughput and latency at several concurrencies (closed loop), beside
grpc.health.v1.Health/Check on the same server, a no-op RPC that shares everything with
PlaceOrder but the work; measured with the command server and PostgreSQL alone, as the relay and
projector run elsewhere in production. Figures are comparable only as ratios within one run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import types_pb2
from server.config import Settings
from server.runtime import free_port


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


def _percentile(sorted_values: list[float], q: float) -> float:
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
        round(_percentile(ms, 0.50), 3), round(_percentile(ms, 0.99), 3), round(_percentile(ms, 0.999), 3),
    )


def _line(i: int) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(
        product_id=f"p-{i % 50}", quantity=1 + i % 3, unit_price=types_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000)
    )


async def write_side(command_addr: str, concurrencies: list[int], seconds: float, progress: Callable[[str], None]) -> list[Measurement]:
    async with grpc.aio.insecure_channel(command_addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        commands = pb_grpc.CommandServiceStub(channel)
        customer_id = f"bench-{uuid.uuid4().hex[:8]}"
        await commands.RegisterCustomer(
            pb.RegisterCustomerRequest(request_id=str(uuid.uuid4()), customer_id=customer_id,
                                       display_name="Bench", email="bench@example.com"), timeout=10)
        counter = iter(range(10**12))

        def place() -> Awaitable[Any]:
            i = next(counter)
            request = pb.PlaceOrderRequest(request_id=str(uuid.uuid4()), order_id=f"{customer_id}-{i}",
                                           customer_id=customer_id, lines=[_line(i), _line(i + 1)])
            return commands.PlaceOrder(request, timeout=10)

        def noop() -> Awaitable[Any]:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        await closed_loop("warm-up", place, 4, min(1.0, seconds))
        results = []
        for concurrency in concurrencies:
            for name, call in (("noop", noop), ("place_order", place)):
                progress(f"  {name:<12} concurrency {concurrency:>3} for {seconds:.0f}s ...")
                results.append(await closed_loop(name, call, concurrency, seconds))
        return results


def ratios(results: list[Measurement]) -> dict[str, float]:
    by = {(m.name, m.concurrency): m for m in results}
    return {
        f"place_order_vs_noop_c{c}": round(by[("place_order", c)].rate / by[("noop", c)].rate, 3)
        for (name, c) in by if name == "place_order" and ("noop", c) in by
    }


def table(results: list[Measurement]) -> str:
    rows = [f"{'call':<12} {'conc':>4} {'calls':>7} {'err':>4} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"]
    for m in results:
        rows.append(f"{m.name:<12} {m.concurrency:>4} {m.calls:>7} {m.errors:>4} {m.rate:>9.1f} {m.p50_ms:>8.2f} {m.p99_ms:>8.2f} {m.p999_ms:>9.2f}")
    return "\n".join(rows)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _wait_serving(stack: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not stack.serving():
        if time.monotonic() > deadline:
            raise SystemExit("the stack did not become SERVING in time")
        stack.supervise()
        time.sleep(0.2)


def run(settings: Settings, *, seconds: float, concurrencies: list[int], json_path: Path | None, use_running: bool,
        stage: str = "write", watchers: int = 1000, rate: float = 200.0) -> int:
    """Runs the benchmark against a fresh local stack (or the configured servers) and reports."""
    from server.supervisor import LocalStack

    if stage == "query":
        return run_query(settings, seconds=seconds, json_path=json_path, use_running=use_running,
                         watchers=watchers, rate=rate)

    def measure(command_addr: str) -> list[Measurement]:
        _say(f"write side: PlaceOrder vs no-op (Health/Check) on {command_addr}")
        return asyncio.run(write_side(command_addr, concurrencies, seconds, _say))

    if use_running:
        results = measure(settings.command_addr)
    else:
        with tempfile.TemporaryDirectory(prefix="orders-bench-") as data:
            local = replace(
                settings,
                data_dir=Path(data),
                command_addr=f"127.0.0.1:{free_port()}",
                query_addr=f"127.0.0.1:{free_port()}",
            )
            _say("starting a fresh stack ...")
            # The write side is measured alone, as it runs in production: the relay and the
            # projector would otherwise take the same two cores the command path is using.
            with LocalStack(local, roles=("command-server", "query-server")) as stack:
                _wait_serving(stack)
                results = measure(local.command_addr)

    report = {
        "write_side": [asdict(m) for m in results],
        "ratios": ratios(results),
        "seconds_per_measurement": seconds,
    }
    print(table(results))
    print("ratios (same client, same run): " + json.dumps(report["ratios"]))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        _say(f"wrote {json_path}")
    return 0


def run_query(settings: Settings, *, seconds: float, json_path: Path | None, use_running: bool,
              watchers: int, rate: float) -> int:
    """`orders bench query`: watch delay under a command rate, then query throughput vs no-op."""
    from server import bench_query
    from server.supervisor import LocalStack

    async def measure(command_addr: str, query_addr: str) -> dict[str, Any]:
        _say(f"read side: {watchers} watchers on {query_addr}")
        watch, order_ids = await bench_query.watch_stage(command_addr, query_addr, watchers, rate, seconds, _say)
        queries = await bench_query.query_stage(query_addr, order_ids, 16, seconds, _say)
        print(bench_query.table(watch))
        print(table(queries))
        return bench_query.report(watch, queries)

    if use_running:
        report = asyncio.run(measure(settings.command_addr, settings.query_addr))
    else:
        with tempfile.TemporaryDirectory(prefix="orders-bench-") as data:
            local = replace(settings, data_dir=Path(data), command_addr=f"127.0.0.1:{free_port()}",
                            query_addr=f"127.0.0.1:{free_port()}")
            _say("starting a fresh stack ...")
            with LocalStack(local) as stack:
                _wait_serving(stack)
                report = asyncio.run(measure(local.command_addr, local.query_addr))
    report["seconds_per_measurement"] = seconds
    print("ratios (same client, same run): " + json.dumps(report["ratios"]))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        _say(f"wrote {json_path}")
    return 0
