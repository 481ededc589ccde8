"""`orders bench stack`: the whole stack on one machine (command server, relay, projector, query
server; no saga). PlaceOrder in a closed loop, then the wait until every acknowledged order is in
the read model: orders projected per second, from the first command to the moment the last
acknowledged one was projected, is the figure to compare with an earlier run's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench.load import Measurement, channel, closed_loop, order_placer
from orders.v1 import command_service_pb2_grpc as pb_grpc

LINES = 2
DRAIN_TIMEOUT = 120.0  # seconds after the load for the read model to catch up before orders count as missing
POLL_SECONDS = 0.02  # the resolution of the moment the last order is projected


async def place_orders(command_addr: str, concurrency: int, seconds: float) -> tuple[Measurement, list[str], float]:
    """PlaceOrder in a closed loop at `concurrency`, the calls going round as many customers: the
    measurement, the acknowledged orders' ids and when the first command was sent."""
    async with channel(command_addr) as ch:
        commands = pb_grpc.CommandServiceStub(ch)
        placers = [await order_placer(commands, f"stack{n}", LINES) for n in range(concurrency)]
        calls = iter(range(10**12))
        acknowledged: list[str] = []

        async def place() -> None:
            reply = await placers[next(calls) % concurrency]()
            acknowledged.append(reply.order_id)

        began = time.perf_counter()
        measurement = await closed_loop("place_order", place, concurrency, seconds)
        return measurement, acknowledged, began


def measure(stack: Any, concurrency: int, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    """The load on `stack`'s command server, then its read model polled in PostgreSQL until it
    holds every acknowledged order (or DRAIN_TIMEOUT passes)."""
    import psycopg

    from server.config import libpq_url
    from server.platform.serving import DEFAULT_TENANT

    # The bench's token is for tenant `bench`; without authentication every call is the default tenant's.
    tenant = "bench" if stack.issuer is not None else DEFAULT_TENANT
    with psycopg.connect(libpq_url(stack.database_url), autocommit=True) as conn:  # before the load: no wait after it
        say(f"stack: PlaceOrder at concurrency {concurrency} for {seconds:.0f}s through command server, relay "
            "and projector ...")
        load, acknowledged, began = asyncio.run(place_orders(stack.settings.command_addr, concurrency, seconds))
        ended = began + load.seconds

        def projected() -> int:
            if not acknowledged:
                return 0
            row = conn.execute("SELECT count(*) FROM order_summaries WHERE tenant_id = %s AND order_id = ANY(%s)",
                               (tenant, acknowledged)).fetchone()
            return int(row[0]) if row else 0

        lag_orders = len(acknowledged) - (done := projected())
        say(f"stack: waiting until the read model holds the {len(acknowledged)} acknowledged orders ...")
        while done < len(acknowledged) and time.perf_counter() < ended + DRAIN_TIMEOUT:
            time.sleep(POLL_SECONDS)
            done = projected()
        caught_up = time.perf_counter()
    return {
        "concurrency": concurrency, "seconds": load.seconds, "lines_per_order": LINES,
        "acknowledged": len(acknowledged), "errors": load.errors, "acknowledged_per_s": load.rate,
        "place_order_p50_ms": load.p50_ms, "place_order_p99_ms": load.p99_ms,
        "projected": done, "missing": len(acknowledged) - done,
        "projected_per_s": round(done / (caught_up - began), 1),
        "lag_orders_at_end": lag_orders, "lag_s_at_end": round(caught_up - ended, 3),
    }


def text(figures: dict[str, Any]) -> str:
    return (f"stack: PlaceOrder at concurrency {figures['concurrency']} for {figures['seconds']:.1f}s: "
            f"{figures['acknowledged']} acknowledged, {figures['acknowledged_per_s']:.1f}/s "
            f"(p50 {figures['place_order_p50_ms']:.1f} ms, p99 {figures['place_order_p99_ms']:.1f} ms), "
            f"{figures['errors']} errors\n"
            f"stack: orders projected {figures['projected_per_s']:.1f}/s, from the first command to the last "
            f"acknowledged order projected; at the end of the load {figures['lag_orders_at_end']} were not yet "
            f"projected, " + (f"and {figures['lag_s_at_end']:.2f}s later all were" if not figures["missing"] else
                              f"and {figures['missing']} still were not {figures['lag_s_at_end']:.0f}s later"))
