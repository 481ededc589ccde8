"""`orders saga list | show | retry`: the operator's view of the sagas, as the database owner."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from psycopg.types.json import Jsonb

from server.config import Settings
from server.platform import reach
from server.saga import model, store

LIST = """SELECT tenant_id, order_id, state, data->>'note', updated_at, deadline_at, retry_at FROM sagas
    WHERE (%(state)s::text IS NULL OR state = %(state)s) AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
    ORDER BY updated_at DESC LIMIT %(limit)s"""
SHOW = "SELECT tenant_id, order_id, data, version, created_at, updated_at, deadline_at, retry_at FROM sagas " \
       "WHERE tenant_id = %s AND order_id = %s"
RETRY = """UPDATE sagas SET state = %(state)s, data = %(data)s, retry_at = now(), version = version + 1,
    updated_at = now() WHERE tenant_id = %(tenant_id)s AND order_id = %(order_id)s AND version = %(version)s"""


class NoSuchSagaError(LookupError):
    pass


async def list_sagas(settings: Settings, state: str | None, tenant: str | None, limit: int) -> list[dict[str, Any]]:
    async with reach.database(settings, autocommit=True) as conn:
        cursor = await conn.execute(LIST, {"state": state, "tenant": tenant, "limit": limit})
        rows = await cursor.fetchall()
    return [{"tenant_id": t, "order_id": o, "state": s, "note": note or "", "updated_at": updated,
             "deadline_at": deadline, "retry_at": retry} for t, o, s, note, updated, deadline, retry in rows]


async def show(settings: Settings, tenant: str, order_id: str) -> dict[str, Any]:
    async with reach.database(settings, autocommit=True) as conn:
        cursor = await conn.execute(SHOW, (tenant, order_id))
        row = await cursor.fetchone()
    if row is None:
        raise NoSuchSagaError(f"no saga for order {order_id!r} of tenant {tenant!r}")
    tenant_id, order, data, version, created, updated, deadline, retry = row
    pending = data.get("pending")
    return {
        "tenant_id": tenant_id, "order_id": order, "state": data["state"], "note": data["note"],
        "customer_id": data["customer_id"], "lines": data["lines"],
        "credit_reserved": data["credit_reserved"], "stock_reserved": data["stock_reserved"],
        "pending": None if pending is None else {k: pending[k] for k in ("name", "request_id", "expected_version",
                                                                         "caused_by", "settle")},
        "attempts": data.get("attempts", 0), "version": version, "created_at": created, "updated_at": updated,
        "deadline_at": deadline, "retry_at": retry,
        "steps": [{"at": dt.datetime.fromtimestamp(at, dt.UTC), "step": step, "outcome": outcome,
                   "request_id": model.request_id(tenant_id, order, step) if step not in ("deadline", "order", "retry")
                   else ""} for at, step, outcome in data["history"]],
    }


def show_text(saga: dict[str, Any]) -> str:
    lines = [f"order {saga['order_id']} (tenant {saga['tenant_id']}): {saga['state']}"
             + (f" ({saga['note']})" if saga["note"] else ""),
             f"  customer {saga['customer_id']}, credit reserved: {'yes' if saga['credit_reserved'] else 'no'}, "
             f"stock reserved per line: {saga['stock_reserved']}"]
    if saga["pending"]:
        pending = saga["pending"]
        lines.append(f"  waiting for: {pending['name']} (request {pending['request_id']}, "
                     f"expected version {pending['expected_version']}, sent {saga['attempts'] + 1}x)")
    if saga["deadline_at"]:
        lines.append(f"  deadline: {saga['deadline_at']:%Y-%m-%d %H:%M:%S.%f}"[:-3])
    lines.append("  steps:")
    for step in saga["steps"]:
        lines.append(f"    {step['at']:%H:%M:%S.%f}"[:-3] + f"  {step['step']:<18} {step['outcome']}"
                     + (f"  {step['request_id']}" if step["request_id"] and step["outcome"] == "sent" else ""))
    return "\n".join(lines)


async def retry(settings: Settings, tenant: str, order_id: str) -> str:
    """A stuck saga back to compensating, or an unfinished one's pending step sent again now."""
    async with reach.database(settings, autocommit=True) as conn:
        stored = await store.load(conn, tenant, order_id)
        if stored is None:
            raise NoSuchSagaError(f"no saga for order {order_id!r} of tenant {tenant!r}")
        saga = model.retry(stored.saga, time.time()) or stored.saga
        if saga.state not in model.ACTIVE:
            return f"order {order_id}: the saga is {saga.state.value}; nothing to retry"
        data = store.to_json(saga, 0)
        data["state"] = saga.state.value
        async with conn.transaction():
            cursor = await conn.execute(RETRY, {"state": saga.state.value, "data": Jsonb(data),
                                                "tenant_id": tenant, "order_id": order_id, "version": stored.version})
            if cursor.rowcount != 1:
                return f"order {order_id}: the saga changed meanwhile; look again with `orders saga show`"
            await store.notify_wake(conn, time.time())
    step = saga.pending.name if saga.pending else "its next step"
    return f"order {order_id}: {step} is sent again now (saga {saga.state.value})"
