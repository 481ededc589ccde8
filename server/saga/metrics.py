"""The saga's Prometheus metrics: sagas by state, step latency, compensations by reason,
deadlines fired, and what CommandService answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from server.saga.model import ACTIVE, Saga, State

log = logging.getLogger(__name__)

SAGAS = Gauge("orders_saga_sagas", "Sagas in each unfinished state (and STUCK), read from the database",
              ["state"])
STARTED = Counter("orders_saga_started_total", "Sagas started (orders placed)")
ENTERED = Counter("orders_saga_entered_total", "Sagas that entered each state in this process", ["state"])
COMPENSATIONS = Counter("orders_saga_compensations_total", "Sagas turned to compensation, by reason", ["reason"])
DEADLINES = Counter("orders_saga_deadlines_fired_total", "Deadlines that expired while a saga went forward")
STEP_SECONDS = Histogram("orders_saga_step_seconds", "From a step sent to its event, by command", ["command"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ANSWERS = Counter("orders_saga_answers_total", "CommandService answers to steps, by command and kind",
                  ["command", "answer"])
CALL_SECONDS = Histogram("orders_saga_call_seconds", "A step's CommandService call", ["command"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
LOST_RACES = Counter("orders_saga_lost_races_total", "Writes that found a saga changed by another process")

# Finished sagas (CONFIRMED, CANCELLED) only grow: orders_saga_entered_total counts them, and
# this count reads only the unfinished ones' part of the state index.
COUNTED = tuple(state.value for state in (*sorted(ACTIVE, key=lambda s: s.value), State.STUCK))
COUNT_STATES = "SELECT state, count(*) FROM sagas WHERE state = ANY(%s) GROUP BY state"
COUNT_EVERY_SECONDS = 10.0


def changed(before: Saga | None, after: Saga, now: float) -> None:
    """Counts a committed change: a saga started, a state entered (a compensation by its reason),
    the steps it completed."""
    if before is None:
        STARTED.inc()
    if before is None or after.state is not before.state:
        ENTERED.labels(after.state.value).inc()
        if after.state is State.COMPENSATING:
            COMPENSATIONS.labels(after.note.split(":", 1)[0] or "OTHER").inc()
    if before is not None:
        steps_done(before, after, now)


def deadline_fired() -> None:
    DEADLINES.inc()


def lost_race() -> None:
    LOST_RACES.inc()


def step_answered(command: str, answer: str, seconds: float) -> None:
    ANSWERS.labels(command, answer.lower()).inc()
    CALL_SECONDS.labels(command).observe(seconds)


def steps_done(before: Saga, after: Saga, now: float) -> None:
    """Observes each step the change completed: from its last "sent" to now."""
    for entry in after.history[len(before.history):]:
        if entry.outcome != "done":
            continue
        sent = next((e.at for e in reversed(before.history) if e.step == entry.step and e.outcome == "sent"), None)
        if sent is not None and before.pending is not None:
            STEP_SECONDS.labels(before.pending.kind.method).observe(max(now - sent, 0.0))


async def count_states(pool: AsyncConnectionPool, stop: asyncio.Event) -> None:
    """Refreshes the sagas-by-state gauge (an index-only count) every COUNT_EVERY_SECONDS."""
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(COUNT_STATES, (list(COUNTED),))
                counts: dict[str, int] = {state: int(n) for state, n in await cursor.fetchall()}
            for state in COUNTED:
                SAGAS.labels(state).set(counts.get(state, 0))
        except psycopg.Error as exc:
            log.debug("saga states not counted", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=COUNT_EVERY_SECONDS)
