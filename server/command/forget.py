"""`orders forget`: an operator forgets customers with the command server's own handler and write
statement (one transaction: key deleted, personal columns and registration hash scrubbed,
CustomerForgotten recorded), as the database owner, and gets a report of what was erased. Also
the list of forgotten customers, which re-shreds a restored backup (docs/privacy.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import psycopg

from orders.v1 import command_service_pb2 as pb
from orders.v1 import events_pb2
from server.command import handlers, store
from server.config import ConfigError, Settings
from server.domain import commands as c
from server.domain.errors import VersionConflictError
from server.platform import tenancy, wire
from server.platform.schema import NOTIFY_CHANNEL

ACTOR = "orders-forget"
ATTEMPTS = 10
_STATE = """SELECT c.version, c.forgotten_at IS NOT NULL, c.display_name <> '' OR c.email <> '',
       EXISTS (SELECT FROM customer_keys k WHERE k.tenant_id = c.tenant_id AND k.customer_id = c.customer_id),
       (SELECT count(*) FROM orders o WHERE o.tenant_id = c.tenant_id AND o.customer_id = c.customer_id),
       (SELECT array_agg(e.payload) FROM events e WHERE e.tenant_id = c.tenant_id AND e.aggregate_type = 'customer'
          AND e.aggregate_id = c.customer_id AND e.event_type = 'CustomerRegistered')
FROM customers c WHERE c.tenant_id = %s AND c.customer_id = %s"""
FORGOTTEN = "SELECT tenant_id, customer_id FROM customers WHERE forgotten_at IS NOT NULL ORDER BY tenant_id, customer_id"


def parse_ids(lines: Iterable[str], default_tenant: str) -> list[tuple[str, str]]:
    """`tenant customer` or `customer` per line (the form `orders forget --list` prints); blank
    lines and # comments are skipped."""
    found = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) == 1:
            found.append((default_tenant, words[0]))
        elif len(words) == 2:
            found.append((words[0], words[1]))
        elif words:
            raise ConfigError([f"not `tenant customer` nor `customer`: {line.strip()!r}"])
    return found


async def forgotten(settings: Settings) -> list[tuple[str, str]]:
    async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
        return [(t, cid) for t, cid in await (await conn.execute(FORGOTTEN)).fetchall()]


async def forget(settings: Settings, ids: list[tuple[str, str]], dry_run: bool) -> list[dict[str, Any]]:
    """One report per customer: what was (or, with dry_run, would be) erased."""
    kek = settings.require_kek()
    reports = []
    async with await psycopg.AsyncConnection.connect(settings.require_database_url(), autocommit=True) as conn:
        for tenant_id, customer_id in ids:
            reports.append(await _forget_one(conn, kek, tenant_id, customer_id, dry_run))
    return reports


async def _state(conn: psycopg.AsyncConnection[Any], tenant_id: str, customer_id: str) -> tuple[Any, ...] | None:
    return await (await conn.execute(_STATE, (tenant_id, customer_id))).fetchone()


async def _forget_one(conn: psycopg.AsyncConnection[Any], kek: bytes, tenant_id: str, customer_id: str,
                      dry_run: bool) -> dict[str, Any]:
    if not tenancy.is_valid(tenant_id):
        raise ConfigError([f"{tenant_id!r} is not a tenant id: {tenancy.RULE}"])
    before = await _state(conn, tenant_id, customer_id)
    if before is None:  # never registered here (or, in a restored backup, registered after it)
        return {"tenant_id": tenant_id, "customer_id": customer_id, "dry_run": dry_run, "found": False}
    version, was_forgotten, personal_columns, has_key, orders, payloads = before
    envelopes = [events_pb2.Envelope.FromString(p) for p in payloads or ()]
    report: dict[str, Any] = {
        "tenant_id": tenant_id, "customer_id": customer_id, "dry_run": dry_run, "found": True,
        "already_forgotten": was_forgotten,
        "data_key_deleted": has_key,
        "personal_columns_scrubbed": personal_columns,
        # Sealed copies (events table, stream, dead letters) unreadable once the key is gone.
        "sealed_events_shredded": sum(1 for e in envelopes if e.customer_registered.sealed_personal_data) if has_key else 0,
        # Registrations written before personal data was sealed (schema version 1): in clear, and
        # stored events are never rewritten.
        "events_in_clear": sum(1 for e in envelopes if not e.customer_registered.sealed_personal_data
                               and (e.customer_registered.display_name or e.customer_registered.email)),
        "orders_kept": orders,
        "version": version,
    }
    if dry_run or was_forgotten:
        return report
    request_id = f"forget-{uuid.uuid4()}"
    request = pb.ForgetCustomerRequest(request_id=request_id, customer_id=customer_id)
    ctx = wire.EventContext(tenant_id, str(uuid.uuid4()), request_id, ACTOR, request_id)
    for attempt in range(1, ATTEMPTS + 1):  # credit may move between the read and the write
        session = store.Session(store.OnConnection(conn), ctx, request_id, "ForgetCustomer", wire.request_hash("ForgetCustomer", request),
                                timeout_ms=30_000, kek=kek)
        written = await handlers.forget_customer(session, c.ForgetCustomer(customer_id))
        try:
            await session.commit(
                pb.ForgetCustomerResponse(customer_id=customer_id, version=written.version).SerializeToString())
            break
        except VersionConflictError:
            if attempt == ATTEMPTS:
                raise
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")  # the relay publishes CustomerForgotten now, not at its poll
    report["version"] = written.version
    return report


def report_text(report: dict[str, Any]) -> str:
    verb = "would be" if report["dry_run"] else "was"
    head = f"{report['tenant_id']}/{report['customer_id']}: "
    if not report["found"]:
        return head + "no such customer in this database"
    if report["already_forgotten"]:
        return head + f"already forgotten; nothing left to erase ({report['orders_kept']} orders kept)"
    lines = [head + ("would be forgotten" if report["dry_run"] else f"forgotten (version {report['version']})"),
             f"  data key {verb} deleted: {'yes' if report['data_key_deleted'] else 'no key (registered before keys)'}",
             f"  personal columns {'would be' if report['dry_run'] else 'were'} scrubbed: {'yes' if report['personal_columns_scrubbed'] else 'already empty'}",
             f"  sealed copies made unreadable (events table, stream, dead letters): {report['sealed_events_shredded']}",
             f"  orders, totals and history kept: {report['orders_kept']} orders"]
    if report["events_in_clear"]:
        lines.append(f"  warning: {report['events_in_clear']} registration event(s) from before sealing hold the "
                     "name and email in clear and are not erased (docs/privacy.md)")
    return "\n".join(lines)
