"""The outbox relay: unpublished events, in id order, to JetStream; then marks them published.

Correctness rests on five choices:
- Rows are found by `published_at IS NULL`, never by a cursor, so an event whose transaction
  commits after a higher id is still published when it commits.
- Each message carries `Nats-Msg-Id = event_id`: a publish repeated after a crash or a timeout
  is dropped by the stream (PubAck.duplicate), and the projector's version guard drops it anyway.
- A batch goes out as JetStream atomic batches (ADR-50), in id order, one after the other: the
  stream stores a batch's events next to each other in that order, or none of them, and one
  PubAck gives every event's sequence. So an aggregate's events reach the stream in version
  order, and a refusal or timeout stops the batch where it is: nothing after it is sent.
- A batch the stream refuses whole (a Nats-Msg-Id it already has, a full stream) goes again one
  event at a time, as on a stream without atomic batches: different aggregates concurrently,
  one aggregate's events one after the other, each only after the previous one's PubAck. The
  stream takes what it can, drops what it has (PubAck.duplicate); a failure stops that
  aggregate's chain, and no later atomic batch goes out: never a later version before an earlier.
- A PostgreSQL advisory lock, held by the same connection that reads and marks the rows, makes
  one relay active; others wait as standbys and take over when its session ends. The lock is a
  lease as well: the active relay runs a statement on that session at least every quarter of
  ORDERS_RELAY_LEASE_SECONDS, and a standby ends a session that ran nothing for longer (a relay
  stopped or frozen keeps its connection and its lock), then takes the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import APIError, NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Gauge
from psycopg.types.json import set_json_loads

from server import telemetry
from server.config import Settings
from server.platform import messaging, reach
from server.platform.schema import NOTIFY_CHANNEL
from server.telemetry import semconv
from server.telemetry.logs import CORRELATION_ID

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x6F72646572730001  # "orders" + 1: one active relay per database
STATUS_EVERY_SECONDS = 5.0
# The longest wait before publishing again after a failure. A clustered stream is without a leader
# for the seconds of an election, refusing with "no responders": a longer back-off would add up to
# itself to every failover. One attempt a second while NATS is away or the stream is full costs little.
PUBLISH_RETRY_MAX_SECONDS = 1.0

_SELECT_BATCH = """
    SELECT id, event_id::text, tenant_id, aggregate_type, aggregate_id, payload, headers
    FROM events WHERE published_at IS NULL ORDER BY id LIMIT %s
"""
# The stream sequence is kept with the row: a rebuild reproduces where each change came from.
# A duplicate's PubAck carries the first copy's sequence, so a republish records the same one.
_MARK_PUBLISHED = """
    UPDATE events e SET published_at = now(), stream_seq = p.seq
    FROM unnest(%s::bigint[], %s::bigint[]) AS p(id, seq) WHERE e.id = p.id
"""
# Marks a batch and reads the next in one round trip. The SELECT sees the rows as they were when
# the statement began, before the UPDATE beside it: the rows it marks are left out by id.
_MARK_AND_SELECT_NEXT = """
    WITH marked AS (
        UPDATE events e SET published_at = now(), stream_seq = p.seq
        FROM unnest(%(ids)s::bigint[], %(seqs)s::bigint[]) AS p(id, seq) WHERE e.id = p.id
    )
    SELECT id, event_id::text, tenant_id, aggregate_type, aggregate_id, payload, headers
    FROM events WHERE published_at IS NULL AND id <> ALL(%(ids)s::bigint[]) ORDER BY id LIMIT %(limit)s
"""
OUTBOX_STATUS = """
    SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)
    FROM events WHERE published_at IS NULL
"""

PUBLISHED = Counter("orders_relay_published_total", "Events the stream acknowledged and the relay marked published")
DUPLICATES = Counter("orders_relay_duplicates_total", "Publishes the stream dropped as duplicates (Nats-Msg-Id)")
FAILURES = Counter("orders_relay_publish_failures_total", "Publishes that failed or timed out; retried", ["reason"])
BATCHES_REFUSED = Counter("orders_relay_batches_refused_total",
                          "Atomic batches the stream refused whole; their events then went one by one", ["reason"])
DEPTH = Gauge("orders_outbox_depth", "Events committed but not yet published")
OLDEST_AGE = Gauge("orders_outbox_oldest_age_seconds", "Age of the oldest unpublished event")
ACTIVE = Gauge("orders_relay_active", "1 while this relay holds the lock and publishes")


@dataclass(frozen=True)
class Row:
    id: int
    event_id: str
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    payload: bytes
    headers: dict[str, Any]


class Publisher:
    """Publishes one batch with PubAck checks: as atomic batches of the stream's, or one event at
    a time, pipelined across aggregates and ordered within one."""

    def __init__(self, nc: Client, partitions: int, timeout: float, atomic: bool = True) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.partitions = partitions
        self.timeout = timeout
        self.atomic = atomic  # off when the stream takes no atomic batches (nats-server < 2.12)
        self.records = telemetry.records_spans()  # else each event's span is only a context to send

    async def publish(self, rows: list[Row]) -> tuple[list[tuple[int, int]], int, int]:
        """Returns the (id, stream sequence) pairs the stream acknowledged, how many publishes
        failed, and how many of the acknowledged ones the stream had already (duplicates)."""
        if not self.atomic:
            acked, failed, duplicates = await self._one_by_one(rows)
            DUPLICATES.inc(duplicates)
            return acked, failed, duplicates
        acked, failed, duplicates = [], 0, 0
        for start in range(0, len(rows), messaging.ATOMIC_BATCH_MAX):
            chunk = rows[start:start + messaging.ATOMIC_BATCH_MAX]
            try:
                acked += await self._atomic(chunk)
                continue
            except APIError as exc:
                # Refused whole, nothing stored: one at a time, the stream takes what it can and
                # says which ones it had (a republish after a crash or a timeout).
                self._refused(exc)
            except (TimeoutError, messaging.NatsError) as exc:
                self._failed(exc)  # after a timeout, the retry is refused as a duplicate if it is in
                failed += 1
                break
            chunk_acked, chunk_failed, chunk_duplicates = await self._one_by_one(chunk)
            acked += chunk_acked
            failed += chunk_failed
            duplicates += chunk_duplicates
            if chunk_failed:
                break  # a later chunk may hold the next event of an aggregate whose chain stopped here
        DUPLICATES.inc(duplicates)
        return acked, failed, duplicates

    async def _atomic(self, rows: list[Row]) -> list[tuple[int, int]]:
        """One atomic batch: every row in the stream, in this order and next to each other, or none."""
        messages, spans = [], []
        for row in rows:
            subject, headers, span = self._message(row)
            messages.append((subject, row.payload, headers))
            spans.append(span)
        try:
            ack = await messaging.publish_atomic(self.nc, messages, self.timeout)
            if ack.batch_size != len(rows):  # not a batch's PubAck: unknown, as after a timeout
                raise TimeoutError(f"a PubAck for {ack.batch_size} of {len(rows)} messages")
        except (TimeoutError, messaging.NatsError) as exc:
            for span in spans:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.end()
            raise
        first = ack.seq - len(rows) + 1
        for offset, span in enumerate(spans):
            span.set_attribute("messaging.nats.stream.sequence", first + offset)
            span.end()
        return [(row.id, first + offset) for offset, row in enumerate(rows)]

    async def _one_by_one(self, rows: list[Row]) -> tuple[list[tuple[int, int]], int, int]:
        """Different aggregates concurrently; one aggregate's events one after the other, each
        only after the previous one's PubAck."""
        chains: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for row in rows:  # rows come in id order, so each chain is in version order
            chains[(row.aggregate_type, row.aggregate_id)].append(row)
        pending = [chain[::-1] for chain in chains.values()]  # pop() takes the next event
        acked: list[tuple[int, int]] = []
        failed = duplicates = 0
        while pending:
            wave = [(chain, chain.pop()) for chain in pending]
            results = await asyncio.gather(*(self._publish(row) for _, row in wave))
            survivors = []
            for (chain, row), ack in zip(wave, results):
                if ack is not None:
                    acked.append((row.id, ack.seq))
                    duplicates += bool(ack.duplicate)
                    if chain:
                        survivors.append(chain)
                else:
                    failed += 1  # the rest of this aggregate waits for the next round
            pending = survivors
        return acked, failed, duplicates

    def _message(self, row: Row) -> tuple[str, dict[str, str], trace.Span]:
        """The event's subject and headers, and its PRODUCER span (started, not ended)."""
        subject = messaging.subject_for(row.tenant_id, row.aggregate_type, row.aggregate_id, self.partitions)
        stored = {str(k): str(v) for k, v in (row.headers or {}).items()}
        # A child of the command that wrote the event, however long ago: the trace runs on. The
        # span is never made current: only its context goes out, in the message's headers.
        name = f"send {messaging.SUBJECT_PREFIX}.{row.aggregate_type}"
        if self.records:
            span = telemetry.tracer.start_span(name, context=telemetry.event_context(stored), kind=SpanKind.PRODUCER,
                                               attributes=self._attributes(row, subject, stored))
        else:
            # A span that is not recorded: only its context is used, so neither the baggage (for
            # the baggage processor) nor the attributes are made.
            parent = trace.set_span_in_context(trace.NonRecordingSpan(telemetry.event_span_context(stored)))
            span = telemetry.tracer.start_span(name, context=parent, kind=SpanKind.PRODUCER)
        headers = {k: v for k, v in stored.items() if k not in telemetry.TRACE_HEADERS}
        telemetry.event_span_into(headers, span.get_span_context())
        headers["Nats-Msg-Id"] = row.event_id
        return subject, headers, span

    def _attributes(self, row: Row, subject: str, stored: dict[str, str]) -> dict[str, Any]:
        return semconv.messaging(
            semconv.SEND, subject, template=messaging.EVENT_SUBJECT_TEMPLATE,
            **{semconv.MESSAGING_MESSAGE_ID: row.event_id,
               semconv.MESSAGING_MESSAGE_CONVERSATION_ID: stored.get(CORRELATION_ID, ""),
               semconv.MESSAGING_MESSAGE_BODY_SIZE: len(row.payload),
               semconv.MESSAGING_DESTINATION_PARTITION_ID: str(messaging.partition_of(row.aggregate_id, self.partitions))})

    async def _publish(self, row: Row) -> api.PubAck | None:
        """One publish, awaiting its PubAck. (js.publish_async would pipeline the same way, but
        nats-py 2.16 loses its error replies, so a full stream would look like a timeout.)"""
        subject, headers, span = self._message(row)
        try:
            ack = await self.js.publish(subject, row.payload, headers=headers, timeout=self.timeout)
        except (TimeoutError, messaging.NatsError) as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            span.end()
            return self._failed(exc)
        span.set_attribute("messaging.nats.stream.sequence", ack.seq)
        span.end()
        return ack

    @staticmethod
    def _failed(exc: Exception) -> None:
        if isinstance(exc, TimeoutError):
            # Unknown, not failed: it may be in the stream. The retry carries the same
            # Nats-Msg-Id, so the stream keeps one copy either way.
            FAILURES.labels("timeout").inc()
        else:
            # A definite refusal, e.g. the stream is full (discard: new): nothing was stored.
            FAILURES.labels(type(exc).__name__).inc()
            log.warning("publish refused", extra={"error": str(exc)})
        return None

    @staticmethod
    def _refused(exc: APIError) -> None:
        duplicate = exc.err_code == messaging.BATCH_DUPLICATE_ERR_CODE
        BATCHES_REFUSED.labels("duplicate" if duplicate else type(exc).__name__).inc()
        log.log(logging.INFO if duplicate else logging.WARNING, "batch refused, publishing its events one by one",
                extra={"error": str(exc)})


async def relay_batch(conn: psycopg.AsyncConnection[Any], publisher: Publisher, settings: Settings,
                      rows: list[Row] | None = None) -> tuple[int, int, list[Row]]:
    """Publishes and marks one batch: `rows`, or else the first unpublished ones. Returns (published,
    failed, the next batch): when every event went out, the statement that marks them also reads
    the next batch, so a batch costs one round trip to PostgreSQL, not two."""
    if not publisher.nc.is_connected:
        return 0, 1, []  # publishing now would only fill the client's reconnect buffer
    if rows is None:
        rows = [Row(*r) for r in await (await conn.execute(_SELECT_BATCH, (settings.relay_batch_size,))).fetchall()]
    if not rows:
        return 0, 0, []
    acked, failed, duplicates = await publisher.publish(rows)
    if acked and settings.relay_crash_after_publish and random.random() < settings.relay_crash_after_publish:
        os._exit(3)  # fault injection: in the stream, not yet marked
    following: list[Row] = []
    if acked:
        # The arrays go as their text form: psycopg's list dumper inspects the elements and picks
        # an array type on every call, a tenth of a batch's work on the relay's side.
        ids, seqs = _array(i for i, _ in acked), _array(seq for _, seq in acked)
        if failed:
            await conn.execute(_MARK_PUBLISHED, (ids, seqs))  # the rest is retried after a back-off
        else:
            cursor = await conn.execute(_MARK_AND_SELECT_NEXT,
                                        {"ids": ids, "seqs": seqs, "limit": settings.relay_batch_size})
            following = [Row(*r) for r in await cursor.fetchall()]
        PUBLISHED.inc(len(acked))
        # A line per batch only when something is worth a look (the counters carry the rest):
        # at INFO under load a line every few milliseconds buried everything else.
        level = logging.INFO if failed or duplicates else logging.DEBUG
        log.log(level, "published", extra={"events": len(acked), "failed": failed, "duplicates": duplicates})
    return len(acked), failed, following


def _array(numbers: Iterable[int]) -> str:
    """PostgreSQL's text form of an integer array, for a parameter cast to bigint[]."""
    return "{" + ",".join(map(str, numbers)) + "}"


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


async def _drop_notifies(conn: psycopg.AsyncConnection[Any]) -> None:
    """Drops the NOTIFYs received so far, which psycopg keeps until read: while batches follow one
    another the relay waits for none. Each is for a commit the next SELECT, begun after, sees."""
    async for _ in conn.notifies(timeout=0):
        pass


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _serve(settings: Settings, publisher: Publisher, stop: asyncio.Event) -> None:
    """Standby until this relay holds the lock; then publish until stopped or the session ends."""
    url = settings.role_database_url("relay")
    name = f"orders-relay {socket.gethostname()}:{os.getpid()}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=name) as conn:
        # Each event's headers arrive as jsonb: orjson reads them in a fifth of json's time.
        set_json_loads(orjson.loads, conn)
        while not stop.is_set():
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))).fetchone()
            if row and row[0]:
                break
            log.info("standby: another relay is active")
            await _end_a_silent_active(conn, settings.relay_lease_seconds)
            await _sleep(stop, min(settings.relay_poll_seconds, settings.relay_lease_seconds / 4))
        else:
            return
        log.info("active relay")
        ACTIVE.set(1)
        heartbeat = asyncio.create_task(_heartbeat(conn, settings.relay_lease_seconds / 4))
        try:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            backoff = 0.0
            next_status = 0.0
            following: list[Row] = []
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                if loop.time() >= next_status:
                    depth, age = await (await conn.execute(OUTBOX_STATUS)).fetchone()  # type: ignore[misc]
                    DEPTH.set(depth)
                    OLDEST_AGE.set(float(age))
                    next_status = loop.time() + STATUS_EVERY_SECONDS
                _, failed, following = await relay_batch(conn, publisher, settings, following or None)
                if failed:
                    # NATS is down, slow or full: back off so as not to spin, then try the same rows.
                    backoff = min(max(backoff * 2, 0.1), PUBLISH_RETRY_MAX_SECONDS)
                    await _sleep(stop, backoff)
                elif not following:
                    # Nothing unpublished when last read: a commit since then NOTIFYs (a NOTIFY that
                    # arrived meanwhile, for rows already read, costs one empty SELECT).
                    backoff = 0.0
                    await _wait(conn, stop, settings.relay_poll_seconds)
                else:
                    await _drop_notifies(conn)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            ACTIVE.set(0)


async def _heartbeat(conn: psycopg.AsyncConnection[Any], every: float) -> None:
    """The active relay's sign of life, whatever its loop waits for (a NOTIFY, a PubAck, a
    back-off): a statement on the session that holds the lock every `every` seconds. The loop
    finds a broken connection itself."""
    with contextlib.suppress(psycopg.Error):
        while True:
            await asyncio.sleep(every)
            await conn.execute("SELECT 1")


async def _end_a_silent_active(conn: psycopg.AsyncConnection[Any], lease: float) -> None:
    """A standby's check: the active relay's session idle for longer than `lease` belongs to a
    relay that hangs (stopped, frozen, its loop blocked) while its connection and lock stay.
    Ending that session frees the lock; the hung relay, if it ever resumes, finds its connection
    gone and becomes a standby. What it was publishing when it stopped goes out again as
    duplicates the stream drops (within its duplicate window) and the projector ignores."""
    row = await (await conn.execute(_SILENT_ACTIVE, {"key": RELAY_LOCK_KEY, "lease": lease})).fetchone()
    if row is None:
        return
    pid, name, silent = row
    log.warning("the active relay ran nothing for longer than its lease: ending its session",
                extra={"pid": pid, "relay": name, "silent_seconds": round(float(silent), 1), "lease_seconds": lease})
    await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def run(settings: Settings) -> None:
    """Composition root of the relay process: retries every failure with backoff until stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    telemetry.serve_metrics(settings.metrics_addr)
    nc = await messaging.connect(settings.require_nats_url(), "orders-relay", settings.nats_access)
    publisher = Publisher(nc, settings.partitions, settings.relay_publish_timeout)
    backoff = 0.1
    try:
        while not stop.is_set():
            try:
                info = await messaging.ensure_stream(
                    publisher.js, settings.stream_name, settings.stream_max_msgs, settings.stream_max_bytes,
                    settings.stream_replicas,
                )
                publisher.atomic = bool(info.config.allow_atomic)
                if not publisher.atomic:
                    log.warning("the stream takes no atomic batches (allow_atomic off, or nats-server < 2.12): "
                                "publishing one by one")
                await _serve(settings, publisher, stop)
                backoff = 0.1
            except (psycopg.Error, TimeoutError, OSError, messaging.NatsError) as exc:
                log.warning("relay error, retrying", extra={"error": repr(exc), "backoff": backoff})
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 5.0)
    finally:
        await messaging.close(nc)


# --- operator commands ------------------------------------------------------------------------

# The session holding the relay's lock.
_HOLDER = """
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid::bigint = (%(key)s >> 32) AND l.objid::bigint = (%(key)s & 4294967295)
"""
_ACTIVE_RELAY = "SELECT a.application_name, a.client_addr::text, a.pid, a.backend_start" + _HOLDER
# ... when it has waited on its relay for longer than the lease (idle, or anything else waiting
# for the client: ClientRead).
_SILENT_ACTIVE = ("SELECT a.pid, a.application_name, extract(epoch FROM clock_timestamp() - a.state_change)"
                  + _HOLDER + " AND a.wait_event = 'ClientRead' AND clock_timestamp() - a.state_change > "
                  "make_interval(secs => %(lease)s)")


async def outbox_status(settings: Settings) -> dict[str, Any]:
    """Depth, age of the oldest unpublished event, which relay is active (None: none), and the
    events stream's replicas (None when NATS_URL is not set)."""
    async with reach.database(settings, autocommit=True) as conn:
        depth, age = await (await conn.execute(OUTBOX_STATUS)).fetchone()  # type: ignore[misc]
        active = await (await conn.execute(_ACTIVE_RELAY, {"key": RELAY_LOCK_KEY})).fetchone()
    relay = None
    if active:
        relay = {"name": active[0], "client_addr": active[1], "backend_pid": active[2], "since": active[3]}
    stream = await stream_status(settings) if settings.nats_url else None
    return {"unpublished_events": int(depth), "oldest_unpublished_seconds": round(float(age), 3), "active_relay": relay,
            "stream": stream}


async def stream_status(settings: Settings) -> dict[str, Any]:
    """The events stream as its servers report it, beside the configuration this code wants."""
    async with reach.nats_connection(settings, "orders-outbox-status") as nc:
        try:
            info = await nc.jetstream().stream_info(settings.stream_name)
        except NotFoundError:
            return {"name": settings.stream_name, "exists": False}
    wanted = messaging.stream_config(settings.stream_name, settings.stream_max_msgs, settings.stream_max_bytes,
                                     settings.stream_replicas)
    return stream_figures(info, wanted)


def stream_figures(info: api.StreamInfo, wanted: api.StreamConfig) -> dict[str, Any]:
    """Replicas, leader, each other replica's state, and the settings that differ from `wanted`.
    A replica that is offline or not current is one the stream cannot count on."""
    cluster = info.cluster or api.ClusterInfo()
    peers = [{"name": peer.name, "current": bool(peer.current), "offline": bool(peer.offline),
              "active_seconds": round((peer.active or 0) / 1e9, 3), "lag": peer.lag or 0}
             for peer in cluster.replicas or []]
    current = sum(1 for peer in cluster.replicas or [] if peer.current and not peer.offline)
    return {
        "name": info.config.name, "exists": True, "replicas": info.config.num_replicas or 1,
        "leader": cluster.leader,
        "current_replicas": (cluster.leader is not None) + current,
        "peers": peers,
        "differences": messaging.stream_differences(wanted, info.config),
    }


def status_text(figures: dict[str, Any]) -> str:
    relay = figures["active_relay"]
    active = f"{relay['name']} (backend pid {relay['backend_pid']}, since {relay['since']:%Y-%m-%d %H:%M:%S})" if relay else "none"
    return (f"unpublished events: {figures['unpublished_events']}\n"
            f"oldest unpublished:  {figures['oldest_unpublished_seconds']:.1f}s\n"
            f"active relay:        {active}" + _stream_text(figures["stream"]))


def _stream_text(stream: dict[str, Any] | None) -> str:
    if stream is None:
        return "\nstream:              not asked (NATS_URL is not set)"
    if not stream["exists"]:
        return f"\nstream:              {stream['name']} does not exist yet (the relay creates it)"
    lines = [f"\nstream:              {stream['name']}, {stream['replicas']} replicas, leader {stream['leader'] or 'none'}, "
             f"{stream['current_replicas']} of {stream['replicas']} current"]
    for peer in stream["peers"]:
        state = "OFFLINE" if peer["offline"] else "current" if peer["current"] else "BEHIND"
        lines.append(f"  replica {peer['name']}:".ljust(21) + f"{state}, last seen {peer['active_seconds']:.1f}s ago, "
                     f"lag {peer['lag']}")
    lines += [f"  differs:           {difference}" for difference in stream["differences"]]
    return "\n".join(lines)


async def republish(settings: Settings, since: str, dry_run: bool) -> int:
    """Marks events created at or after `since` unpublished, so the relay sends them again.

    For recovery when the stream lost messages (e.g. its storage was lost): the stream drops
    copies it still has (Nats-Msg-Id, within the duplicate window) and the projector ignores
    versions it has applied, so republishing too much is safe; too little is not.
    """
    async with reach.database(settings) as conn, conn.transaction():
        if dry_run:
            row = await (await conn.execute(
                "SELECT count(*) FROM events WHERE created_at >= %s::timestamptz AND published_at IS NOT NULL", (since,)
            )).fetchone()
            return int(row[0]) if row else 0
        cursor = await conn.execute(
            "UPDATE events SET published_at = NULL WHERE created_at >= %s::timestamptz AND published_at IS NOT NULL",
            (since,),
        )
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        return cursor.rowcount
