"""Applies a batch of events in one PostgreSQL transaction with a fixed number of round trips,
whatever its size: one SELECT of the batch's applied versions, one of its parked aggregates, a
few set-based statements per read model, one upsert of the versions, the dead letters and the
checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orders.v1 import events_pb2
from projector.decide import Check, Decision, Decoded, Incoming, Key, Outcome, decide, decode
from projector.views.base import ReadModel, rows_json, select_json

# Batches take it shared; a swap or a dead-letter replay takes it exclusive, so neither ever
# interleaves with a batch (and a swap sees every batch either wholly before or wholly after).
PROJECTION_LOCK_KEY = 0x6F72646572730002
# Read-model rows are stamped with `change_seq` from a sequence, and watchers read changes in
# change_seq order (migration 0005): the stamps must be handed out in commit order. Projector
# processes apply their partitions' batches at the same time, so a batch that applies anything
# holds this lock from before its first stamp until it commits: two batches never stamp and
# commit interleaved (a watcher past the later stamp would miss the earlier one for good).
CHANGE_ORDER_LOCK_KEY = 0x6F72646572730003

# Keys and versions travel as one JSON document per statement (see models.select_json): binding
# three arrays element by element cost the projector more than the statements themselves.
_APPLIED = f"""
    SELECT tenant_id, aggregate_type, aggregate_id, version FROM applied_versions
    WHERE (tenant_id, aggregate_type, aggregate_id) IN ({select_json("text", "text", "text")})
    FOR UPDATE
"""
_PARKED = f"""
    SELECT DISTINCT tenant_id, aggregate_type, aggregate_id FROM dead_letters
    WHERE status = 'parked' AND (tenant_id, aggregate_type, aggregate_id) IN ({select_json("text", "text", "text")})
"""
# clock_timestamp(), not now(): a batch whose transaction began before a rebuild started but that
# took the projection lock after it must count as applied after the start, or the rebuild's
# catch-up would miss it.
UPSERT_APPLIED = f"""
    INSERT INTO applied_versions (tenant_id, aggregate_type, aggregate_id, version, applied_at)
    SELECT *, clock_timestamp() FROM ({select_json("text", "text", "text", "bigint")}) AS applied
    ON CONFLICT (tenant_id, aggregate_type, aggregate_id)
    DO UPDATE SET version = EXCLUDED.version, applied_at = clock_timestamp()
"""
INSERT_DEAD = """
    INSERT INTO dead_letters (stream_seq, subject, tenant_id, aggregate_type, aggregate_id, aggregate_version,
                              event_id, event_type, payload, headers, reason, error)
    VALUES (%(stream_seq)s, %(subject)s, %(tenant_id)s, %(aggregate_type)s, %(aggregate_id)s,
            %(aggregate_version)s, %(event_id)s, %(event_type)s, %(payload)s, %(headers)s, %(reason)s, %(error)s)
    ON CONFLICT (stream_seq) DO NOTHING
"""
# One row per consumer the batch read from (each partition's durable): no two processes ever
# write the same row, so batches of different partitions never wait on each other here.
_CHECKPOINT = f"""
    INSERT INTO projection_checkpoints (consumer, stream_seq, updated_at)
    SELECT *, now() FROM ({select_json("text", "bigint")}) AS checkpoints
    ON CONFLICT (consumer) DO UPDATE SET stream_seq = greatest(projection_checkpoints.stream_seq, EXCLUDED.stream_seq),
                                         updated_at = now()
"""
# A consumer's batch writes its versions and its checkpoint in one statement: a statement less
# per batch, a fixed cost that small batches pay in full. (The INSERT in WITH runs whether or not
# the rest reads it, and with no versions to write, it writes none.)
_APPLIED_AND_CHECKPOINT = f"""
    WITH applied AS ({UPSERT_APPLIED})
    {_CHECKPOINT}
"""

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class Applied:
    """An event the committed batch applied, for whoever is told after the commit."""

    envelope: events_pb2.Envelope
    stream_seq: int
    headers: Mapping[str, str]  # its message's, with the trace context for the notice that follows it


async def lock_projection(conn: Conn, *, shared: bool = False) -> None:
    """Takes the projection lock until the transaction ends: shared for a batch, exclusive for
    whatever must not interleave with one."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {fn}(%s)", (PROJECTION_LOCK_KEY,))


def fault_check(faults: frozenset[str]) -> Check:
    """`faults` names aggregates whose handler must fail: ORDERS_PROJECTOR_FAULT_AGGREGATES, the
    tests' way to break a handler in a real process."""

    def check(env: events_pb2.Envelope) -> None:
        if env.aggregate_id in faults:
            raise RuntimeError(f"injected handler fault for {env.aggregate_id}")

    return check


async def apply_models(conn: Conn, models: Sequence[ReadModel], batch: Sequence[tuple[events_pb2.Envelope, int]],
                       shadow: bool = False) -> None:
    for model in models:
        await model.apply(conn, batch, model.shadow() if shadow else model.live())


async def upsert_applied(conn: Conn, final: dict[Key, int]) -> None:
    if final:
        await conn.execute(UPSERT_APPLIED, [rows_json((*key, version) for key, version in final.items())])


async def load_applied(conn: Conn, keys: Iterable[Key]) -> dict[Key, int]:
    rows = await (await conn.execute(_APPLIED, [rows_json(keys)])).fetchall()
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


async def load_state(conn: Conn, keys: set[Key]) -> tuple[dict[Key, int], set[Key]]:
    """The keys' applied versions, and which of their aggregates (each of its tenant) are parked."""
    # Both statements go out before either result is awaited: one round trip, not two. They still
    # run one after the other, so the parked set is read after the versions' row locks are held.
    keys_json = rows_json(keys)
    applied = await conn.execute(_APPLIED, [keys_json])
    parked = await conn.execute(_PARKED, [keys_json])
    return ({(r[0], r[1], r[2]): int(r[3]) for r in await applied.fetchall()},
            {(r[0], r[1], r[2]) for r in await parked.fetchall()})


async def write(conn: Conn, decisions: Sequence[Decision], models: Sequence[ReadModel],
                checkpoints: Mapping[str, int] | None) -> None:
    """Everything a batch changes, in a few set-based statements: no round trip per event."""
    final: dict[Key, int] = {}
    batch: list[tuple[events_pb2.Envelope, int]] = []
    for d in decisions:
        if d.outcome is Outcome.APPLIED and d.envelope is not None:
            final[d.key] = d.envelope.aggregate_version
            batch.append((d.envelope, d.item.stream_seq))
    if batch:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_ORDER_LOCK_KEY,))
    await apply_models(conn, models, batch)
    dead = [dead_letter_params(d) for d in decisions if d.outcome is Outcome.DEAD]
    if dead:
        async with conn.cursor() as cur:
            await cur.executemany(INSERT_DEAD, dead)
    if not checkpoints:
        await upsert_applied(conn, final)
    else:
        await conn.execute(_APPLIED_AND_CHECKPOINT,
                           [rows_json((*key, version) for key, version in final.items()),
                            rows_json(sorted(checkpoints.items()))])


def dead_letter_params(d: Decision) -> dict[str, Any]:
    env = d.envelope  # when there is one, the key holds its tenant, type and id (see decode)
    # A forged event's ids may be longer than any real one: clipped to the columns, they are
    # still parked, rather than refused by the database again and again.
    return dict(
        stream_seq=d.item.stream_seq, subject=d.item.subject, tenant_id=d.key[0][:64],
        aggregate_type=d.key[1][:32], aggregate_id=d.key[2][:64],
        aggregate_version=None if env is None else env.aggregate_version,
        event_id=None if env is None else env.event_id[:64],
        event_type=None if env is None else (env.WhichOneof("payload") or None),
        payload=d.item.data, headers=Jsonb(dict(d.item.headers)), reason=d.reason, error=d.error[:2000],
    )


def _is_event_fault(exc: BaseException) -> bool:
    """A statement the database refused, or a handler that raised, for some event of the batch;
    not a lost connection (then nothing is the events' fault and the batch is simply retried)."""
    return not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


async def apply_batch(
    conn: Conn,
    items: Sequence[Incoming],
    models: Sequence[ReadModel],
    check: Check,
    *,
    checkpoints: Mapping[str, int] | None,
    max_gap_deliveries: int,
    before_commit: Callable[[], None] | None = None,
    decoded: Sequence[Decoded] | None = None,
) -> list[Decision]:
    """Decides and writes `items` in one transaction. When the database refuses a statement,
    retries each item alone (with its `decoded` envelope), so the one bad event becomes a dead
    letter and the rest apply. `checkpoints`: the last stream sequence of each consumer the items
    came from."""
    decodings = list(decoded) if decoded is not None else [decode(i) for i in items]

    async def attempt(forced: str | None = None) -> list[Decision]:
        def guarded(env: events_pb2.Envelope) -> None:
            if forced is not None:  # this lone event failed to apply: make it a dead letter
                raise RuntimeError(forced)
            check(env)

        # Pipeline mode: statements go out as they are built, so the database works on one while
        # the next is prepared; only the reads (and the commit) wait for the server.
        async with conn.pipeline(), conn.transaction():
            await lock_projection(conn, shared=True)
            applied, parked = await load_state(conn, {d[1] for d in decodings})
            decisions = decide(items, applied, parked, guarded, max_gap_deliveries, decodings)
            await write(conn, decisions, models, checkpoints)
            if before_commit is not None:
                before_commit()
        return decisions

    try:
        return await attempt()
    except Exception as exc:
        if not _is_event_fault(exc):
            raise
        if len(items) > 1:
            out: list[Decision] = []
            for item, decoding in zip(items, decodings):
                out.extend(await apply_batch(conn, [item], models, check, checkpoints=checkpoints, decoded=[decoding],
                                             max_gap_deliveries=max_gap_deliveries, before_commit=before_commit))
            return out
        return await attempt(forced=f"failed to apply: {exc!r}")


def applied_events(decisions: Sequence[Decision]) -> list[Applied]:
    """Each applied event with its message's headers."""
    return [Applied(d.envelope, d.item.stream_seq, d.item.headers) for d in decisions
            if d.outcome is Outcome.APPLIED and d.envelope is not None]

