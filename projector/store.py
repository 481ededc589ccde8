"""Applies a batch of events in one PostgreSQL transaction with a fixed number of round trips:
one SELECT of the batch's applied versions, one of its parked aggregates, then every read-model
statement, the version upserts, the dead letters and the checkpoint pipelined together."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orders.v1 import events_pb2
from projector.decide import Decision, Incoming, Key, Outcome, dead_letter_params, decide, decode
from projector.models import ReadModel, Statement

# Batches take it shared; a swap or a dead-letter replay takes it exclusive, so neither ever
# interleaves with a batch (and a swap sees every batch either wholly before or wholly after).
PROJECTION_LOCK_KEY = 0x6F72646572730002

_APPLIED = """
    SELECT tenant_id, aggregate_type, aggregate_id, version FROM applied_versions
    WHERE (tenant_id, aggregate_type, aggregate_id) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))
    FOR UPDATE
"""
_PARKED = """
    SELECT DISTINCT aggregate_type, aggregate_id FROM dead_letters
    WHERE status = 'parked'
      AND (aggregate_type, aggregate_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
UPSERT_APPLIED = """
    INSERT INTO applied_versions (tenant_id, aggregate_type, aggregate_id, version, applied_at)
    VALUES (%s, %s, %s, %s, now())
    ON CONFLICT (tenant_id, aggregate_type, aggregate_id)
    DO UPDATE SET version = EXCLUDED.version, applied_at = now()
"""
INSERT_DEAD = """
    INSERT INTO dead_letters (stream_seq, subject, tenant_id, aggregate_type, aggregate_id, aggregate_version,
                              event_id, event_type, payload, headers, reason, error)
    VALUES (%(stream_seq)s, %(subject)s, %(tenant_id)s, %(aggregate_type)s, %(aggregate_id)s,
            %(aggregate_version)s, %(event_id)s, %(event_type)s, %(payload)s, %(headers)s, %(reason)s, %(error)s)
    ON CONFLICT (stream_seq) DO NOTHING
"""
_CHECKPOINT = """
    INSERT INTO projection_checkpoints (consumer, stream_seq, updated_at) VALUES (%s, %s, now())
    ON CONFLICT (consumer) DO UPDATE SET stream_seq = greatest(projection_checkpoints.stream_seq, EXCLUDED.stream_seq),
                                         updated_at = now()
"""

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class Applied:
    """An event the committed batch applied, for whoever is told after the commit."""

    envelope: events_pb2.Envelope
    stream_seq: int


def planner(models: Sequence[ReadModel], faults: frozenset[str] = frozenset()) -> Callable[[events_pb2.Envelope, int], list[Statement]]:
    """All models' statements for one event, into their live tables. `faults` names aggregates
    whose handler must fail: ORDERS_PROJECTOR_FAULT_AGGREGATES, the tests' way to break a handler."""
    tables = [(m, m.live()) for m in models]

    def plan(env: events_pb2.Envelope, stream_seq: int) -> list[Statement]:
        if env.aggregate_id in faults:
            raise RuntimeError(f"injected handler fault for {env.aggregate_id}")
        return [s for model, names in tables for s in model.plan(env, stream_seq, names)]

    return plan


async def load_state(conn: Conn, keys: set[Key]) -> tuple[dict[Key, int], set[tuple[str, str]]]:
    cols = list(zip(*keys)) if keys else [[], [], []]
    rows = await (await conn.execute(_APPLIED, [list(c) for c in cols])).fetchall()
    parked_rows = await (await conn.execute(_PARKED, [list(cols[1]), list(cols[2])])).fetchall()
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}, {(r[0], r[1]) for r in parked_rows}


async def write(conn: Conn, decisions: Sequence[Decision], consumer: str | None, checkpoint: int) -> None:
    """Sends everything a batch changes in one pipeline: no round trip per event."""
    final: dict[Key, int] = {}
    for d in decisions:
        if d.outcome is Outcome.APPLIED and d.envelope is not None:
            final[d.key] = d.envelope.aggregate_version
    dead = [dict(dead_letter_params(d), headers=Jsonb(dict(d.item.headers))) for d in decisions if d.outcome is Outcome.DEAD]
    async with conn.pipeline():
        async with conn.cursor() as cur:
            for d in decisions:
                for statement in d.statements:
                    await cur.execute(statement.sql, statement.params)
            if final:
                await cur.executemany(UPSERT_APPLIED, [(*k, v) for k, v in final.items()])
            if dead:
                await cur.executemany(INSERT_DEAD, dead)
            if consumer is not None:
                await cur.execute(_CHECKPOINT, (consumer, checkpoint))


def _is_event_fault(exc: BaseException) -> bool:
    """A statement the database refused for this event's data, not a lost connection."""
    return isinstance(exc, psycopg.Error) and not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


async def apply_batch(
    conn: Conn,
    items: Sequence[Incoming],
    plan: Callable[[events_pb2.Envelope, int], list[Statement]],
    *,
    consumer: str | None,
    max_gap_deliveries: int,
    before_commit: Callable[[], None] | None = None,
) -> list[Decision]:
    """Decides and writes `items` in one transaction. When the database refuses a statement,
    retries each item alone, so the one bad event becomes a dead letter and the rest apply."""
    failed: dict[int, str] = {}

    async def attempt(batch: Sequence[Incoming]) -> list[Decision]:
        def guarded(env: events_pb2.Envelope, seq: int) -> list[Statement]:
            if seq in failed:
                raise RuntimeError(failed[seq])
            return plan(env, seq)

        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PROJECTION_LOCK_KEY,))
            keys = {decode_key(i) for i in batch}
            applied, parked = await load_state(conn, keys)
            decisions = decide(batch, applied, parked, guarded, max_gap_deliveries)
            await write(conn, decisions, consumer, max(i.stream_seq for i in batch))
            if before_commit is not None:
                before_commit()
        return decisions

    try:
        return await attempt(items)
    except Exception as exc:
        if not _is_event_fault(exc):
            raise
        if len(items) > 1:
            out: list[Decision] = []
            for item in items:
                out.extend(await apply_batch(conn, [item], plan, consumer=consumer,
                                             max_gap_deliveries=max_gap_deliveries, before_commit=before_commit))
            return out
        failed[items[0].stream_seq] = f"database refused the event: {exc!r}"
        return await attempt(items)


def decode_key(item: Incoming) -> Key:
    return decode(item)[1]


def applied_events(decisions: Sequence[Decision]) -> list[Applied]:
    return [Applied(d.envelope, d.item.stream_seq) for d in decisions
            if d.outcome is Outcome.APPLIED and d.envelope is not None]

