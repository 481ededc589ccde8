"""After a batch commits, tell every query-server replica which orders changed.

Subject `orders.views.<tenant_id>` on core NATS; payload a small JSON object
{"t": tenant_id, "o": order_id, "c": customer_id, "v": version, "s": stream_seq}. Fire and
forget: a lost notice only delays watchers until their next periodic re-check, and a failure
here never fails or holds back the projector.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import psycopg
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from projector.store import Applied
from projector.views import order_summaries
from projector.views.base import rows_by_order
from projector.views.order_summaries import OrderSummaryRow
from server import telemetry
from server.platform import messaging
from server.telemetry import semconv

log = logging.getLogger(__name__)

OrderKey = tuple[str, str]  # tenant_id, order_id


def from_batch(applied: Sequence[Applied]) -> tuple[dict[OrderKey, Applied], list[tuple[Any, ...]]]:
    """Each changed order's last applied change, and the notices the batch itself holds: those of
    orders it placed, when the order's last change is one `order_summaries` applies. The committed
    row then holds that change's version and stream sequence and the placement's customer, so
    reading it back would add a statement and a round trip per batch and tell nothing more."""
    last: dict[OrderKey, Applied] = {}  # the last change of each order wins
    placed: dict[OrderKey, str] = {}
    for a in applied:
        env = a.envelope
        if env.aggregate_type == "order":
            last[key := (env.tenant_id, env.aggregate_id)] = a
            if env.HasField("order_placed"):
                placed[key] = env.order_placed.customer_id
    return last, [(*key, customer, a.envelope.aggregate_version, a.stream_seq)
                  for key, customer in sorted(placed.items())
                  if (a := last[key]).envelope.WhichOneof("payload") in order_summaries.MODEL.handlers]


class Notices:
    """Publishes the notices for committed batches, over a connection of its own."""

    def __init__(self, nc: Client, connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]) -> None:
        self._nc = nc
        self._connect = connect
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def publish_applied(self, applied: Sequence[Applied]) -> None:
        """One notice per order the batch changed: from the batch when it placed the order (see
        `from_batch`), else read back from the committed rows so it carries the customer even for
        events that do not."""
        last, rows = from_batch(applied)
        if not last:
            return
        try:
            if unknown := sorted(last.keys() - {(r[0], r[1]) for r in rows}):
                if self._conn is None or self._conn.closed:
                    self._conn = await self._connect()
                rows += await rows_by_order(self._conn, OrderSummaryRow.__tablename__, "customer_id, version, stream_seq",
                                            unknown)
            for tenant_id, order_id, customer_id, version, stream_seq in rows:
                payload = {"t": tenant_id, "o": order_id, "c": customer_id, "v": version, "s": stream_seq}
                body = orjson.dumps(payload)
                subject = f"{messaging.NOTICE_PREFIX}.{tenant_id}"
                parent = telemetry.event_context(last[(tenant_id, order_id)].headers)
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
