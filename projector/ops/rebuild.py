"""Rebuild a read model from the `events` table (the source of truth) into shadow tables, compare
them with the live ones, and swap them in.

Why the shadow ends up equal to the live model: the shadow applies, per aggregate, exactly the
versions the live model has applied (`applied_versions`, shared by every model). The first pass
walks the events up to a high-water id, skipping any event the live side has not applied yet;
the versions it applied are kept in `rebuild_versions`. A catch-up then applies, for every
aggregate the projector touched since the rebuild began, the events between the shadow's version
and the live one. Parity and the swap run the catch-up under the exclusive projection lock, so no
batch commits in between: the swap (table renames, in one transaction) loses nothing, and a
query blocked on a rename reads the new table when it resumes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from orders.v1 import events_pb2
from projector.decide import Key
from projector.store import Conn, lock_projection
from projector.views.base import ReadModel, rows_json, select_json
from server.platform import privileges, upcasting

CHUNK = 5000

_SAVE_VERSIONS = f"""
    INSERT INTO rebuild_versions (model, tenant_id, aggregate_type, aggregate_id, version)
    SELECT %s, * FROM ({select_json("text", "text", "text", "bigint")}) AS saved
    ON CONFLICT (model, tenant_id, aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version
"""


class Progress:
    """A one-line progress bar on stderr (stdout stays for results)."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total, self.out, self.began, self.last = max(total, 1), out, time.monotonic(), 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        rate = done / max(now - self.began, 1e-9)
        filled = int(30 * min(done, self.total) / self.total)
        self.out.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {done}/{self.total} events {rate:,.0f}/s")
        if final:
            self.out.write("\n")
        self.out.flush()


async def prepare(conn: Conn, model: ReadModel) -> tuple[int, int]:
    """Fresh, empty shadow tables; records when the rebuild began. Returns (low, high) event ids."""
    async with conn.transaction():
        # No batch is in flight while the start is recorded: any batch after it has a later applied_at.
        await lock_projection(conn)
        for live, shadow in model.shadow().items():
            await conn.execute(f"DROP TABLE IF EXISTS {shadow}")
            await conn.execute(f"CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)")
        await conn.execute("DELETE FROM rebuild_versions WHERE model = %s", (model.name,))
        row = await (await conn.execute("SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM events")).fetchone()
        assert row is not None
        await conn.execute(
            """INSERT INTO rebuilds (model, started_at, high_water_id) VALUES (%s, now(), %s)
               ON CONFLICT (model) DO UPDATE SET started_at = now(), high_water_id = EXCLUDED.high_water_id""",
            (model.name, row[1]),
        )
    return int(row[0]), int(row[1])


async def _apply(conn: Conn, model: ReadModel, rows: Iterable[tuple[Any, ...]], versions: dict[Key, int]) -> int:
    """Applies rows (tenant, type, id, version, payload, stream_seq, live_version) that are next
    for the shadow and already applied live, as one batch, in the caller's transaction."""
    changed: dict[Key, int] = {}
    batch: list[tuple[events_pb2.Envelope, int]] = []
    for tenant, agg_type, agg_id, version, payload, seq, live_version in rows:
        key = (tenant, agg_type, agg_id)
        if seq is None or live_version is None or version > live_version or version != versions.get(key, 0) + 1:
            # Not applied live yet, or its stream position not yet recorded by the relay (the
            # catch-up will see it), or behind a skipped one.
            continue
        batch.append((upcasting.parse(payload), seq))  # the newest form, as the projector applied it
        versions[key] = changed[key] = version
    await model.apply(conn, batch, model.shadow())
    if changed:
        await conn.execute(_SAVE_VERSIONS, [model.name, rows_json((*key, version) for key, version in changed.items())])
    return len(batch)


async def first_pass(conn: Conn, model: ReadModel, low: int, high: int, progress: Progress | None) -> int:
    versions: dict[Key, int] = {}
    after, applied, seen = low - 1, 0, 0
    while after < high:
        rows = await (await conn.execute(
            """SELECT e.id, e.tenant_id, e.aggregate_type, e.aggregate_id, e.aggregate_version, e.payload,
                      e.stream_seq, a.version
               FROM events e LEFT JOIN applied_versions a USING (tenant_id, aggregate_type, aggregate_id)
               WHERE e.id > %s AND e.id <= %s ORDER BY e.id LIMIT %s""",
            (after, high, CHUNK),
        )).fetchall()
        if not rows:
            break
        async with conn.transaction():
            applied += await _apply(conn, model, (r[1:] for r in rows), versions)
        after = int(rows[-1][0])
        seen += len(rows)
        if progress is not None:
            progress.update(seen)
    if progress is not None:
        progress.update(seen, final=True)
    return applied


async def catch_up(conn: Conn, model: ReadModel, patience: float = 30.0) -> int:
    """Applies what the live side applied since the rebuild began and the shadow lacks. The
    projector may apply an event before the relay has recorded its stream sequence (that comes
    right after the publish), so this waits for those positions rather than guess them."""
    deadline = time.monotonic() + patience
    while True:
        rows = await (await conn.execute(_CATCH_UP, (model.name,))).fetchall()
        if all(r[5] is not None for r in rows):
            break
        if time.monotonic() > deadline:
            raise SystemExit("the relay has not recorded the stream position of applied events; is it running?")
        await asyncio.sleep(0.1)
    versions = {(r[0], r[1], r[2]): int(r[7]) for r in rows}
    return await _apply(conn, model, (r[:7] for r in rows), versions)


_CATCH_UP = """
    SELECT e.tenant_id, e.aggregate_type, e.aggregate_id, e.aggregate_version, e.payload,
           e.stream_seq, a.version, coalesce(r.version, 0)
    FROM rebuilds b
    JOIN applied_versions a ON a.applied_at >= b.started_at
    LEFT JOIN rebuild_versions r ON r.model = b.model AND r.tenant_id = a.tenant_id
         AND r.aggregate_type = a.aggregate_type AND r.aggregate_id = a.aggregate_id
    JOIN events e ON e.tenant_id = a.tenant_id AND e.aggregate_type = a.aggregate_type
         AND e.aggregate_id = a.aggregate_id
         AND e.aggregate_version > coalesce(r.version, 0) AND e.aggregate_version <= a.version
    WHERE b.model = %s ORDER BY e.id
"""


async def rebuild(conn: Conn, model: ReadModel, out: TextIO = sys.stderr) -> dict[str, Any]:
    began = time.monotonic()
    low, high = await prepare(conn, model)
    applied = await first_pass(conn, model, low, high, Progress(high - low + 1 if high else 0, out))
    async with conn.transaction():
        caught_up = await catch_up(conn, model)
    seconds = time.monotonic() - began
    return {"model": model.name, "events_scanned_up_to_id": high, "applied": applied, "caught_up": caught_up,
            "seconds": round(seconds, 3), "events_per_second": round((applied + caught_up) / max(seconds, 1e-9), 1)}


async def _require_rebuild(conn: Conn, model: ReadModel) -> None:
    row = await (await conn.execute("SELECT 1 FROM rebuilds WHERE model = %s", (model.name,))).fetchone()
    if row is None:
        raise SystemExit(f"no rebuild of {model.name} in progress: run `orders rebuild {model.name}` first")


async def parity(conn: Conn, model: ReadModel, limit: int = 50) -> list[str]:
    """Catches the shadow up, then lists rows that differ between live and shadow, table by table,
    under the projection lock so neither moves while they are compared."""
    await _require_rebuild(conn, model)
    differences: list[str] = []
    async with conn.transaction():
        await lock_projection(conn)
        await catch_up(conn, model)
        for live, shadow in model.shadow().items():
            columns = ", ".join(await _compared_columns(conn, live))
            rows = await (await conn.execute(
                f"""(SELECT 'live only' AS side, t.* FROM
                       (SELECT {columns} FROM {live} EXCEPT SELECT {columns} FROM {shadow}) t)
                    UNION ALL
                    (SELECT 'shadow only', t.* FROM
                       (SELECT {columns} FROM {shadow} EXCEPT SELECT {columns} FROM {live}) t)
                    LIMIT %s""",
                (limit,),
            )).fetchall()
            differences.extend(f"{live}: {row[0]}: {row[1:]}" for row in rows)
    return differences


async def swap(conn: Conn, model: ReadModel) -> int:
    """Swaps the shadow in, in one transaction, after a last catch-up under the projection lock.
    Indexes and constraints get the live tables' names back, so later migrations still find them,
    and the tables get the live ones' grants (the query server reads them, the projector writes)."""
    await _require_rebuild(conn, model)
    async with conn.transaction():
        await lock_projection(conn)
        caught_up = await catch_up(conn, model)
        for live, shadow in model.shadow().items():
            live_indexes = await _indexes(conn, live)
            shadow_indexes = await _indexes(conn, shadow)
            triggers = await _triggers(conn, live)
            await conn.execute(f"ALTER TABLE {live} RENAME TO {live}__old")
            await conn.execute(f"ALTER TABLE {shadow} RENAME TO {live}")
            await conn.execute(f"DROP TABLE {live}__old")
            for shape, name in shadow_indexes.items():
                if shape in live_indexes:
                    await conn.execute(f"ALTER INDEX {name} RENAME TO {live_indexes[shape]}")
            for definition in triggers:  # LIKE copies no triggers: e.g. the change_seq stamp
                await conn.execute(definition)
            for statement in privileges.table_statements(live):  # nor grants
                await conn.execute(statement)
        await conn.execute("DELETE FROM rebuild_versions WHERE model = %s", (model.name,))
        await conn.execute("DELETE FROM rebuilds WHERE model = %s", (model.name,))
    return caught_up


# Stamped by the database on every write (see migration 0005): they differ between live and shadow
# by design, so parity does not compare them.
STAMP_COLUMNS = frozenset({"change_seq"})


async def _compared_columns(conn: Conn, table: str) -> list[str]:
    rows = await (await conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )).fetchall()
    return [str(name) for (name,) in rows if name not in STAMP_COLUMNS]


async def _triggers(conn: Conn, table: str) -> list[str]:
    """CREATE TRIGGER statements for the table's own triggers, naming it as it is called now."""
    rows = await (await conn.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (table,)
    )).fetchall()
    return [str(definition) for (definition,) in rows]


async def _indexes(conn: Conn, table: str) -> dict[str, str]:
    """Index shape (its definition without its name and table) -> index name."""
    rows = await (await conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s", (table,)
    )).fetchall()
    return {str(d).split(" USING ", 1)[1] + ("u" if "UNIQUE" in str(d) else ""): str(n) for n, d in rows}
