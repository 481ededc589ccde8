"""After a batch commits, tell every query-server replica which orders changed.

Subject `orders.views.<tenant_id>` on core NATS; payload a small JSON object
{"t": tenant_id, "o": order_id, "c": customer_id, "v": version, "s": stream_seq}. Fire and
forget: a lost notice only delays watchers until their next periodic re-check, and a failure
here never fails or holds back the projector.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from projector.store import Applied
from projector.views.base import rows_by_order
from projector.views.order_summaries import OrderSummaryRow
from server import telemetry
from server.platform import messaging
from server.telemetry import semconv

log = logging.getLogger(__name__)

class Notices:
    """Publishes the notices for committed batches, over a connection of its own."""

    def __init__(self, nc: Client, connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]) -> None:
        self._nc = nc
        self._connect = connect
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def publish_applied(self, applied: Sequence[Applied]) -> None:
        """One notice per order the batch changed, read back from the committed rows so it
        carries the customer even for events that do not."""
        carried = {(a.envelope.tenant_id, a.envelope.aggregate_id): a.headers for a in applied
                   if a.envelope.aggregate_type == "order"}  # the last change of each order wins
        changed = sorted(carried)
        if not changed:
            return
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            rows = await rows_by_order(self._conn, OrderSummaryRow.__tablename__, "customer_id, version, stream_seq", changed)
            for tenant_id, order_id, customer_id, version, stream_seq in rows:
                payload = {"t": tenant_id, "o": order_id, "c": customer_id, "v": version, "s": stream_seq}
                body = json.dumps(payload, separators=(",", ":")).encode()
                subject = f"{messaging.NOTICE_PREFIX}.{tenant_id}"
                parent = telemetry.event_context(carried[(tenant_id, order_id)])
                # The notice continues the trace of the change it announces, so the watcher's
                # push that it causes lands in the same trace as the command.
                span = telemetry.tracer.start_span(
                    f"send {messaging.NOTICE_PREFIX}", context=parent, kind=SpanKind.PRODUCER,
                    attributes=semconv.messaging(
                        semconv.SEND, subject, template=messaging.NOTICE_SUBJECT_TEMPLATE,
                        **{semconv.MESSAGING_MESSAGE_BODY_SIZE: len(body), "orders.aggregate_id": order_id,
                           "orders.aggregate_version": version}),
                )
                headers: dict[str, str] = {}
                telemetry.inject_into(headers, trace.set_span_in_context(span, parent))  # baggage too
                try:
                    await self._nc.publish(subject, body, headers=headers)
                finally:
                    span.end()
        except Exception as exc:  # noqa: BLE001 - notices are best effort by design
            log.warning("view notices not sent", extra={"error": repr(exc)})
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
