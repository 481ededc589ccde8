"""The read models, one module each, registered in MODELS.

A read model owns a few tables (the first is the one queries read) and, per event type, a pure
function that turns an event into SQL statements. Statements name tables through `Tables`, so the
same functions fill the live tables (the projector) or shadow ones (a rebuild)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

from orders.v1 import events_pb2


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Mapping[str, Any]


# Logical table name -> physical name (the table itself, or its shadow during a rebuild).
Tables = Mapping[str, str]
Plan = Callable[[events_pb2.Envelope, int, Tables], list[Statement]]


@dataclass(frozen=True)
class ReadModel:
    name: str
    tables: tuple[Table, ...]
    handlers: Mapping[str, Plan] = field(default_factory=dict)
    # Columns parity ignores: none so far; kept so a model can exclude a wall-clock column.
    parity_ignore: frozenset[str] = frozenset()

    def live(self) -> dict[str, str]:
        return {t.name: t.name for t in self.tables}

    def shadow(self) -> dict[str, str]:
        return {t.name: shadow_name(t.name) for t in self.tables}

    def plan(self, env: events_pb2.Envelope, stream_seq: int, tables: Tables) -> list[Statement]:
        handler = self.handlers.get(env.WhichOneof("payload") or "")
        return [] if handler is None else handler(env, stream_seq, tables)


def shadow_name(table: str) -> str:
    return f"{table}__shadow"


def _registry() -> tuple[ReadModel, ...]:
    from projector.models import customer_orders, order_summaries, product_sales

    return (order_summaries.MODEL, customer_orders.MODEL, product_sales.MODEL)


MODELS: tuple[ReadModel, ...] = _registry()
# Every event type the contract defines; a payload outside it is unknown (a dead letter).
EVENT_TYPES = frozenset(f.name for f in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields)


def by_name(name: str) -> ReadModel:
    for model in MODELS:
        if model.name == name:
            return model
    raise KeyError(f"no read model {name!r}; known: {', '.join(m.name for m in MODELS)}")
