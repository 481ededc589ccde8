"""After a batch commits, tell every query-server replica which orders changed.

Subject `orders.views.<tenant_id>` on core NATS; payload a small JSON object
{"t": tenant_id, "o": order_id, "c": customer_id, "v": version, "s": stream_seq}. Fire and
forget: a lost notice only delays watchers until their next periodic re-check, and a failure
here never fails or holds back the projector.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from nats.aio.client import Client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.v1 import events_pb2

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "orders.views"

_CHANGED = text(
    """SELECT s.tenant_id, s.order_id, s.customer_id, s.version, s.stream_seq
       FROM order_summaries s
       JOIN unnest(CAST(:tenants AS text[]), CAST(:orders AS text[])) AS c(tenant_id, order_id)
         ON s.tenant_id = c.tenant_id AND s.order_id = c.order_id"""
)


async def publish_applied(nc: Client, engine: AsyncEngine, applied: Sequence[tuple[events_pb2.Envelope, int]]) -> None:
    """One notice per order changed by `applied` (envelopes with their stream sequences), read
    back from the committed rows so the notice carries the customer even for events without it."""
    changed = sorted({(env.tenant_id, env.aggregate_id) for env, _ in applied if env.aggregate_type == "order"})
    if not changed:
        return
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(_CHANGED, {"tenants": [t for t, _ in changed], "orders": [o for _, o in changed]})).all()
        for tenant_id, order_id, customer_id, version, stream_seq in rows:
            payload = {"t": tenant_id, "o": order_id, "c": customer_id, "v": version, "s": stream_seq}
            await nc.publish(f"{SUBJECT_PREFIX}.{tenant_id}", json.dumps(payload, separators=(",", ":")).encode())
    except Exception as exc:  # noqa: BLE001 - notices are best effort by design
        log.warning("view notices not sent", extra={"error": repr(exc)})
