"""`orders dlq`: list, show, replay and discard dead letters.

Replay works per aggregate (of one tenant: tenants' ids may collide, and one tenant's dead letter
never touches another's aggregate), because a dead letter holds back every later event of its aggregate:
`replay <id>` retries that letter's aggregate queue from its head in version order (an undecodable
letter first), applying each event on top of the applied version exactly as the projector would;
it stops at the first letter that still fails (which stays parked with its new error) and leaves
the rest parked behind it. A duplicate (version already applied) is marked replayed with no
effect. It runs under the projection lock, so it never interleaves with a projector batch."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from projector.decide import Incoming, Outcome, decide, decode, no_check
from projector.store import Conn, apply_models, load_applied, lock_projection, upsert_applied
from projector.views import MODELS

_COLUMNS = ("id, stream_seq, subject, tenant_id, aggregate_type, aggregate_id, aggregate_version, event_id, "
            "event_type, reason, error, status, created_at, resolved_at")


def _step(letter_id: int, result: str, detail: str = "") -> str:
    """A report line; result is replayed, duplicate or still parked."""
    return f"#{letter_id}: {result}{(' - ' + detail) if detail else ''}"


async def list_letters(conn: Conn, include_resolved: bool = False) -> list[dict[str, Any]]:
    where = "" if include_resolved else "WHERE status = 'parked'"
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id")
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row)) for row in await cur.fetchall()]


async def show(conn: Conn, letter_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {_COLUMNS}, headers, payload FROM dead_letters WHERE id = %s", (letter_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    out = dict(zip([c.name for c in cur.description or []], row))
    out["payload"] = bytes(out["payload"]).hex()
    return out


async def replay(conn: Conn, letter_ids: list[int] | None, *, dry_run: bool) -> list[str]:
    """Replays the aggregates of `letter_ids` (None: every parked aggregate) in one transaction;
    with dry_run, reports what would happen and rolls back."""
    report: list[str] = []
    tx = conn.transaction(force_rollback=dry_run)
    async with tx:
        await lock_projection(conn)
        picked = "" if letter_ids is None else "AND id = ANY(%(ids)s)"
        aggregates = await (await conn.execute(
            f"""SELECT DISTINCT tenant_id, aggregate_type, aggregate_id FROM dead_letters
                WHERE status = 'parked' {picked}""",
            {"ids": letter_ids or []},
        )).fetchall()
        for tenant_id, aggregate_type, aggregate_id in aggregates:
            report.extend(await _replay_aggregate(conn, tenant_id, aggregate_type, aggregate_id))
    return [("(dry run) " if dry_run else "") + line for line in report] or ["nothing parked to replay"]


async def _replay_aggregate(conn: Conn, tenant_id: str, aggregate_type: str, aggregate_id: str) -> list[str]:
    letters = await (await conn.execute(
        """SELECT id, stream_seq, subject, payload, headers FROM dead_letters
           WHERE status = 'parked' AND tenant_id = %s AND aggregate_type = %s AND aggregate_id = %s
           ORDER BY aggregate_version NULLS FIRST, stream_seq""",
        (tenant_id, aggregate_type, aggregate_id),
    )).fetchall()
    report = []
    for letter_id, seq, subject, payload, headers in letters:
        item = Incoming(seq, subject, bytes(payload), headers or {}, 1)
        decoded = decode(item)
        applied = await load_applied(conn, [decoded[1]])
        [decision] = decide([item], applied, set(), no_check, max_gap_deliveries=2**31, decoded=[decoded])
        error = decision.error
        if decision.outcome is Outcome.APPLIED:
            try:
                assert decision.envelope is not None
                async with conn.transaction():  # a savepoint: a failure undoes this event only
                    await apply_models(conn, MODELS, [(decision.envelope, seq)])
                    await upsert_applied(conn, {decision.key: decision.envelope.aggregate_version})
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except Exception as exc:
                error = f"failed to apply: {exc!r}"
            else:
                await _resolve(conn, letter_id, "replayed")
                report.append(_step(letter_id, "replayed"))
                continue
        elif decision.outcome is Outcome.DUPLICATE:
            await _resolve(conn, letter_id, "replayed")
            report.append(_step(letter_id, "duplicate", "already applied, no effect"))
            continue
        elif decision.outcome is Outcome.GAP:
            error = f"still waiting for version {applied.get(decision.key, 0) + 1}"
        await conn.execute("UPDATE dead_letters SET error = %s WHERE id = %s", (error[:2000], letter_id))
        report.append(_step(letter_id, "still parked", error))
        break  # everything behind it stays parked behind it
    return report


async def _resolve(conn: Conn, letter_id: int, status: str) -> None:
    await conn.execute("UPDATE dead_letters SET status = %s, resolved_at = now() WHERE id = %s", (status, letter_id))


async def discard(conn: Conn, letter_id: int, *, dry_run: bool) -> str:
    """Marks a letter discarded: its event will never apply. Letters parked behind it stay parked
    until replayed (they may now apply, or wait for a version that will never come)."""
    async with conn.transaction(force_rollback=dry_run):
        await lock_projection(conn)
        row = await (await conn.execute(
            "UPDATE dead_letters SET status = 'discarded', resolved_at = now() WHERE id = %s AND status = 'parked' "
            "RETURNING tenant_id, aggregate_type, aggregate_id", (letter_id,),
        )).fetchone()
    if row is None:
        return f"#{letter_id}: not parked, nothing to discard"
    return f"{'(dry run) ' if dry_run else ''}#{letter_id}: discarded (tenant {row[0]}: {row[1]} {row[2]})"


def as_json(rows: Any) -> str:
    return json.dumps(rows, default=str, indent=2)
