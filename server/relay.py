"""The outbox relay: unpublished events, in id order, to JetStream; then marks them published.

Correctness rests on three choices. Rows are found by `published_at IS NULL`, never by a cursor,
so an event whose transaction commits after a higher id is still published. Each message carries
`Nats-Msg-Id = event_id`, so a publish repeated after a crash is dropped by the stream. A
PostgreSQL advisory lock makes one relay active; others wait as standbys.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import psycopg
from nats.js import JetStreamContext

from server import messaging
from server.config import Settings, libpq_url
from server.db import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x6F72646572730001  # "orders" + 1: one active relay per database
BATCH_SIZE = 500

_SELECT_BATCH = """
    SELECT id, event_id::text, aggregate_type, aggregate_id, payload, headers
    FROM events WHERE published_at IS NULL ORDER BY id LIMIT %s
"""
_MARK_PUBLISHED = """
    UPDATE events e SET published_at = now(), stream_seq = p.seq
    FROM unnest(%s::bigint[], %s::bigint[]) AS p(id, seq) WHERE e.id = p.id
"""


async def publish_batch(conn: psycopg.AsyncConnection[Any], js: JetStreamContext, partitions: int) -> int:
    """Publishes one batch of unpublished events; returns how many were published and marked."""
    rows = await (await conn.execute(_SELECT_BATCH, (BATCH_SIZE,))).fetchall()
    published: list[int] = []
    sequences: list[int] = []  # a duplicate's PubAck carries the first copy's sequence
    try:
        for row_id, event_id, aggregate_type, aggregate_id, payload, headers in rows:
            nats_headers = {str(k): str(v) for k, v in (headers or {}).items()}
            nats_headers["Nats-Msg-Id"] = event_id
            ack = await js.publish(
                messaging.subject_for(aggregate_type, aggregate_id, partitions), payload, headers=nats_headers
            )
            if ack.duplicate:
                log.info("duplicate publish dropped by the stream", extra={"event_id": event_id})
            published.append(row_id)
            sequences.append(ack.seq)
    finally:
        # Whatever got a PubAck is in the stream: record it even when a later publish failed.
        if published:
            await conn.execute(_MARK_PUBLISHED, (published, sequences))
    return len(published)


async def _wait(conn: psycopg.AsyncConnection[Any], stop: asyncio.Event, timeout: float) -> None:
    """Returns on a NOTIFY, on stop, or after `timeout` (the safety-net poll)."""

    async def notified() -> None:
        async for _ in conn.notifies(timeout=timeout, stop_after=1):
            pass

    tasks = [asyncio.create_task(notified()), asyncio.create_task(stop.wait())]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _active(settings: Settings, js: JetStreamContext, stop: asyncio.Event) -> None:
    url = libpq_url(settings.require_database_url())
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as control:
        locked = False
        while not stop.is_set():
            row = await (await control.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))).fetchone()
            if row and row[0]:
                locked = True
                break
            log.info("standby: another relay is active")
            await _wait(control, stop, settings.relay_poll_seconds)
        if not locked:
            return
        log.info("active relay")
        await control.execute(f"LISTEN {NOTIFY_CHANNEL}")
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as work:
            while not stop.is_set():
                count = await publish_batch(work, js, settings.partitions)
                if count:
                    log.info("published", extra={"events": count})
                if count < BATCH_SIZE:
                    await _wait(control, stop, settings.relay_poll_seconds)


async def run(settings: Settings) -> None:
    """Composition root of the relay process: retries every failure with backoff until stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    nc = await messaging.connect(settings.require_nats_url(), "orders-relay")
    js = nc.jetstream()
    backoff = 0.1
    try:
        while not stop.is_set():
            try:
                await messaging.ensure_stream(js, settings.stream_name)
                await _active(settings, js, stop)
                backoff = 0.1
            except (psycopg.Error, TimeoutError, OSError, messaging.NatsError) as exc:
                log.warning("relay error, retrying", extra={"error": repr(exc), "backoff": backoff})
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 5.0)
    finally:
        await messaging.close(nc)
