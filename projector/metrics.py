"""The projector's Prometheus metrics: lag in events and seconds, dead letters, throughput.
Served on METRICS_ADDR (host:port) like every process's metrics; off when unset."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

from projector.decide import Decision

LAG_EVENTS = Gauge("orders_projector_lag_events", "Events in the stream the projector has not yet processed")
LAG_SECONDS = Gauge("orders_projector_lag_seconds", "Age of the oldest event in the last batch while a backlog remains")
DEAD_LETTERS = Gauge("orders_projector_dead_letters", "Dead letters still parked")
EVENTS = Counter("orders_projector_events_total", "Events processed, by outcome", ["outcome"])


def batch_done(decisions: Sequence[Decision], pending: int, oldest: dt.datetime) -> None:
    for outcome, n in collections.Counter(d.outcome.value for d in decisions).items():
        EVENTS.labels(outcome).inc(n)
    LAG_EVENTS.set(pending)
    age = (dt.datetime.now(dt.UTC) - oldest).total_seconds()
    LAG_SECONDS.set(max(0.0, age) if pending else 0.0)


def idle() -> None:
    LAG_EVENTS.set(0)
    LAG_SECONDS.set(0)


async def count_dead_letters(connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]], stop: asyncio.Event) -> None:
    """Refreshes the dead-letter gauge every few seconds (a replay by the CLI changes it too)."""
    while not stop.is_set():
        with contextlib.suppress(psycopg.Error, OSError):
            async with await connect() as conn:
                while not stop.is_set():
                    row = await (await conn.execute("SELECT count(*) FROM dead_letters WHERE status = 'parked'")).fetchone()
                    DEAD_LETTERS.set(row[0] if row else 0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1)
