"""What every read model is made of.

A read model owns a few tables (the first is the one queries read), an apply function per event
type that records the event's effect in memory (its `Changes`), and a `flush` that writes a whole
batch of effects with a few set-based statements (upserts over rows sent as one JSON document,
see `select_json`): a batch of 1,000 events costs a handful of round trips, not 1,000. Statements
name tables through `Tables`, so the same code fills the live tables (the projector) or shadow
ones (a rebuild)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import psycopg
from sqlalchemy import Table

from orders.v1 import events_pb2

# Logical table name -> physical name (the table itself, or its shadow during a rebuild).
Tables = Mapping[str, str]
Conn = psycopg.AsyncConnection[Any]


class Changes(Protocol):
    """One batch's effects on one read model, gathered by the apply functions."""

    async def flush(self, conn: Conn, tables: Tables) -> None: ...


Apply = Callable[[Any, events_pb2.Envelope, int], None]


@dataclass(frozen=True)
class ReadModel:
    name: str
    tables: tuple[Table, ...]
    changes: Callable[[], Changes]
    handlers: Mapping[str, Apply]

    def live(self) -> dict[str, str]:
        return {t.name: t.name for t in self.tables}

    def shadow(self) -> dict[str, str]:
        return {t.name: shadow_name(t.name) for t in self.tables}

    async def apply(self, conn: Conn, batch: Sequence[tuple[events_pb2.Envelope, int]], tables: Tables) -> None:
        """Applies events that are each the next version of their aggregate, in batch order."""
        changes = self.changes()
        touched = False
        for env, stream_seq in batch:
            handler = self.handlers.get(env.WhichOneof("payload") or "")
            if handler is not None:
                handler(changes, env, stream_seq)
                touched = True
        if touched:
            await changes.flush(conn, tables)


# How a column of `select_json` turns a JSON value into its SQL type.
_FROM_JSON = {
    "text": "r->>{n}",
    "bigint": "(r->>{n})::bigint",
    "jsonb": "r->{n}",
    "nanos": "(r->>{n})::numeric * 0.000000001",  # exact: numeric(38, 9) from integer nanos
    "micros": "'epoch'::timestamptz + (r->>{n})::bigint * interval '1 microsecond'",
}


def select_json(*types: str) -> str:
    """`SELECT <columns> FROM <rows>` over rows passed as one JSON array of arrays (`rows_json`),
    the columns in the given types. One json.dumps per statement costs far less than binding
    arrays value by value."""
    columns = ", ".join(_FROM_JSON[t].format(n=n) for n, t in enumerate(types))
    return f"SELECT {columns} FROM jsonb_array_elements(%s::jsonb) AS r"


def rows_json(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as one JSON array of arrays. orjson encodes a batch ten times faster than json (a
    twentieth of the projector's time); integers beyond 64 bits (amounts in nanos above nine
    billion units) are left to json, which has no such limit."""
    rows = list(rows)
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, separators=(",", ":"))


async def rows_by_order(conn: Conn, table: str, columns: str, keys: Sequence[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """The rows of a table keyed by (tenant_id, order_id) for `keys`: those two, then `columns`."""
    if not keys:
        return []
    return await (await conn.execute(
        f"""SELECT tenant_id, order_id, {columns} FROM {table}
            WHERE (tenant_id, order_id) IN ({select_json("text", "text")})""",
        [rows_json(keys)],
    )).fetchall()


def shadow_name(table: str) -> str:
    return f"{table}__shadow"


# Every event type the contract defines; a payload outside it is unknown (a dead letter).
EVENT_TYPES = frozenset(f.name for f in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields)
