"""The saga's rows in PostgreSQL: a saga as one JSON document beside its state, deadline, next
retry and version. Every change is written only if the row is still at the version it was read
at (optimistic concurrency): a saga process that lost a race reads again and decides again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from server.domain.money import Money
from server.saga.model import Entry, Kind, Line, Saga, State, Step

Conn = psycopg.AsyncConnection[Any]
WAKE_CHANNEL = "orders_saga_wake"  # NOTIFY with the earliest wake-up a transaction set (epoch seconds)

_COLUMNS = "tenant_id, order_id, data, version"
SELECT_MANY = f"SELECT {_COLUMNS} FROM sagas WHERE (tenant_id, order_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
SELECT_ONE = f"SELECT {_COLUMNS} FROM sagas WHERE tenant_id = %s AND order_id = %s"
INSERT = """INSERT INTO sagas (tenant_id, order_id, state, deadline_at, retry_at, data, version)
    VALUES (%(tenant_id)s, %(order_id)s, %(state)s, %(deadline_at)s, %(retry_at)s, %(data)s, 1)
    ON CONFLICT DO NOTHING"""
UPDATE = """UPDATE sagas SET state = %(state)s, deadline_at = %(deadline_at)s, retry_at = %(retry_at)s, data = %(data)s,
    version = version + 1, updated_at = now()
    WHERE tenant_id = %(tenant_id)s AND order_id = %(order_id)s AND version = %(version)s"""
CHECKPOINT = """INSERT INTO saga_checkpoints (consumer, stream_seq, updated_at) VALUES (%s, %s, now())
    ON CONFLICT (consumer) DO UPDATE SET stream_seq = greatest(saga_checkpoints.stream_seq, EXCLUDED.stream_seq),
                                         updated_at = now()"""
DRIVES_SINCE = "SELECT drives_since FROM saga_checkpoints WHERE consumer = %s"
NEXT_WAKE = "SELECT extract(epoch FROM min(wake_at))::float8 FROM sagas WHERE wake_at IS NOT NULL"
DUE = f"""SELECT {_COLUMNS} FROM sagas WHERE wake_at IS NOT NULL AND wake_at <= now()
    ORDER BY wake_at LIMIT %s FOR UPDATE SKIP LOCKED"""


class LostRace(Exception):
    """Another saga process changed a saga between this one's read and write."""


@dataclass(frozen=True)
class Stored:
    """A saga as read, with the version its next write must still find, and how many times its
    pending step has been sent."""

    saga: Saga
    version: int
    attempts: int = 0


# --- the JSON document ------------------------------------------------------------------------


def to_json(saga: Saga, attempts: int) -> dict[str, Any]:
    return {
        "customer_id": saga.customer_id,
        "total": [saga.total.currency_code, saga.total.units, saga.total.nanos],
        "lines": [[line.product_id, line.quantity] for line in saga.lines],
        "correlation_id": saga.correlation_id,
        "deadline": saga.deadline,
        "credit_reserved": saga.credit_reserved,
        "stock_reserved": list(saga.stock_reserved),
        "pending": None if saga.pending is None else _step_json(saga.pending),
        "note": saga.note,
        "order_cancelled": saga.order_cancelled,
        "history": [[entry.at, entry.step, entry.outcome] for entry in saga.history],
        "attempts": attempts,
    }


def _step_json(step: Step) -> dict[str, Any]:
    return {"name": step.name, "kind": step.kind.name, "target": step.target, "request_id": step.request_id,
            "expected_version": step.expected_version, "caused_by": step.caused_by, "line": step.line,
            "settle": step.settle, "trace": dict(step.trace)}


def from_row(tenant_id: str, order_id: str, data: dict[str, Any], version: int, state: str | None = None) -> Stored:
    pending = data["pending"]
    saga = Saga(
        tenant_id=tenant_id,
        order_id=order_id,
        customer_id=data["customer_id"],
        total=Money(*data["total"]),
        lines=tuple(Line(product, quantity) for product, quantity in data["lines"]),
        correlation_id=data["correlation_id"],
        state=State(state or data["state"]),
        deadline=data["deadline"],
        credit_reserved=data["credit_reserved"],
        stock_reserved=tuple(data["stock_reserved"]),
        pending=None if pending is None else Step(
            pending["name"], Kind[pending["kind"]], pending["target"], pending["request_id"],
            pending["expected_version"], pending["caused_by"], pending["line"], pending["settle"],
            tuple(sorted(pending.get("trace", {}).items()))),
        note=data["note"],
        order_cancelled=data["order_cancelled"],
        history=tuple(Entry(at, step, outcome) for at, step, outcome in data["history"]),
    )
    return Stored(saga, version, data.get("attempts", 0))


def _row(columns: Sequence[Any]) -> Stored:
    tenant_id, order_id, data, version = columns
    return from_row(tenant_id, order_id, data, version, data.get("state"))


def _params(saga: Saga, attempts: int, retry_at: float | None) -> dict[str, Any]:
    data = to_json(saga, attempts)
    data["state"] = saga.state.value
    return {"tenant_id": saga.tenant_id, "order_id": saga.order_id, "state": saga.state.value,
            "deadline_at": _time(saga.deadline), "retry_at": _time(retry_at), "data": Jsonb(data)}


def _time(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


# --- statements -------------------------------------------------------------------------------


async def load_many(conn: Conn, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    keys = list(keys)
    if not keys:
        return {}
    cursor = await conn.execute(SELECT_MANY, ([k[0] for k in keys], [k[1] for k in keys]))
    return {(row[0], row[1]): _row(row) for row in await cursor.fetchall()}


async def load(conn: Conn, tenant_id: str, order_id: str) -> Stored | None:
    cursor = await conn.execute(SELECT_ONE, (tenant_id, order_id))
    row = await cursor.fetchone()
    return None if row is None else _row(row)


@dataclass(frozen=True)
class Change:
    """A saga to write: new (`before` None) or changed from `before`, with how many times its
    pending step has been sent and when it is sent again."""

    before: Stored | None
    saga: Saga
    attempts: int
    retry_at: float | None

    @property
    def wake_at(self) -> float | None:
        """When the saga next needs attention: its deadline or its step's next send."""
        times = [at for at in (self.saga.deadline, self.retry_at) if at is not None]
        return min(times) if times else None


async def write(conn: Conn, changes: Sequence[Change]) -> None:
    """Inserts the new sagas and updates the changed ones, each kind in one executemany (one round
    trip, through psycopg's pipeline), every update only where its row is still at the version it
    was read at. Raises LostRace, and the caller's transaction rolls back, if any was not."""
    inserts = [_params(c.saga, 0, c.retry_at) for c in changes if c.before is None]
    updates = [{**_params(c.saga, c.attempts, c.retry_at), "version": c.before.version}
               for c in changes if c.before is not None]
    for sql, rows, what in ((INSERT, inserts, "was started by another saga process"),
                            (UPDATE, updates, "changed meanwhile")):
        if not rows:
            continue
        async with conn.cursor() as cursor:
            await cursor.executemany(sql, rows)
            if cursor.rowcount != len(rows):
                raise LostRace(f"{len(rows) - cursor.rowcount} of {len(rows)} sagas {what}")


async def checkpoint(conn: Conn, consumer: str, stream_seq: int) -> None:
    await conn.execute(CHECKPOINT, (consumer, stream_seq))


async def drives_since(conn: Conn, consumer: str) -> dt.datetime:
    """Orders placed before this are not the saga's (see migration 0009)."""
    cursor = await conn.execute(DRIVES_SINCE, (consumer,))
    row = await cursor.fetchone()
    if row is None:  # a database from before the saga's migration is not migrated yet
        raise RuntimeError("the saga's checkpoint row is missing: run `orders migrate`")
    since: dt.datetime = row[0]
    return since


async def notify_wake(conn: Conn, at: float) -> None:
    """Tells every saga process (at commit) that a saga needs attention at `at`."""
    await conn.execute("SELECT pg_notify(%s, %s)", (WAKE_CHANNEL, repr(at)))


async def next_wake(conn: Conn) -> float | None:
    cursor = await conn.execute(NEXT_WAKE)
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def due(conn: Conn, limit: int) -> list[Stored]:
    """Sagas whose wake-up has come, locked for this transaction (others skip them)."""
    cursor = await conn.execute(DUE, (limit,))
    return [_row(row) for row in await cursor.fetchall()]
