"""The projector's consumers, one durable per partition of the event subjects, of which this
process owns its fair share (projector.partitions): applies a batch of events and its
checkpoints in one transaction, then acks. Event v of an aggregate is applied only on top of
v-1: a lower or equal version is a duplicate (acked, no effect), a higher one waits for the gap
to fill (nak with a delay) and, after ORDERS_PROJECTOR_MAX_GAP_DELIVERIES tries, becomes a dead
letter. Fetches take what is there, up to FETCH_BATCH: a large backlog goes many events per
transaction, a trickle one at a time; the batches of several partitions share a transaction."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from projector import DURABLE, metrics, notices, partitions
from projector.decide import Check, Decision, Incoming, Outcome
from projector.store import Applied, Conn, applied_events, apply_batch, fault_check
from projector.views import MODELS
from projector.views.base import ReadModel
from server import telemetry
from server.config import Settings
from server.platform import messaging, process
from server.telemetry import semconv

log = logging.getLogger(__name__)

FETCH_BATCH = 1000  # a batch's span links every message: at most telemetry.MAX_LINKS (a unit test checks)
GAP_DELAY_SECONDS = 1.0
CHECK_SECONDS = 1.0  # how often members and partitions are counted again
DEADLOCK_RETRIES = 10

# A JetStream reply subject without domain and account: $JS.ACK.<stream>.<consumer>.<delivered>.<stream
# seq>.<consumer seq>.<time>.<pending>; the newer form has both after ACK (nats-py's Msg.Ack indexes).
_V1_TOKENS, _V1_NUM_DELIVERED = 9, 4

# Called after a batch commits and before its messages are acked, with what it applied: the
# place to tell others (e.g. publish "view changed" notices). It may be called again for the same
# events after a crash, as acks may not have reached the stream.
OnCommitted = Callable[[list[Applied]], Awaitable[None]]


def incoming(msg: Msg) -> Incoming:
    """The message as the decision needs it. Its stream sequence and delivery count are read from
    the reply subject directly: nats-py's `metadata` also builds a timestamp and two objects per
    message, a tenth of the projector's time."""
    tokens = Msg.Metadata._get_metadata_fields(msg.reply)  # the library's own check of the subject
    delivered = Msg.Ack.NumDelivered if len(tokens) > _V1_TOKENS else _V1_NUM_DELIVERED
    return Incoming(int(tokens[delivered + 1]), msg.subject, msg.data, msg.headers or {}, int(tokens[delivered]))


async def settle(msg: Msg, decision: Decision) -> None:
    """Tells the stream what became of a message, strictly after the transaction committed."""
    if decision.outcome is Outcome.GAP:
        await msg.nak(delay=GAP_DELAY_SECONDS)
        return
    if decision.outcome is Outcome.DEAD:
        log.error("dead letter", extra={"stream_seq": decision.item.stream_seq, "reason": decision.reason,
                                        "error": decision.error})
    await msg.ack()


class CrashHooks:
    """ORDERS_PROJECTOR_CRASH_{BEFORE,AFTER}_COMMIT=n: die (os._exit) in the n-th batch, before its
    commit or between commit and ack; the crash tests' way to hit those exact points."""

    def __init__(self, before: int, after: int) -> None:
        self.before, self.after, self.batches = before, after, 0

    def before_commit(self) -> None:
        self.batches += 1
        if self.before and self.batches >= self.before:
            os._exit(70)

    def after_commit(self) -> None:
        if self.after and self.batches >= self.after:
            os._exit(71)


class Feeds:
    """The consumers of the partitions this process owns, each with the batch it fetches ahead
    while the last one is applied (so the stream and the database work at the same time)."""

    def __init__(self, js: JetStreamContext, stream: str, durable: str, partitions_: int) -> None:
        self.js, self.stream, self.durable, self.partitions = js, stream, durable, partitions_
        self.feeds: dict[int, Feed] = {}
        self.turn = 0

    async def open(self, partition: int) -> None:
        config = partitions.consumer_config(self.durable, partition)
        name = config.durable_name or ""
        sub = await self.js.pull_subscribe((config.filter_subjects or [""])[0], durable=name, stream=self.stream,
                                           config=config)
        self.feeds[partition] = Feed(partition, name, sub, asyncio.create_task(_fetch(sub)))

    async def close(self, partition: int) -> None:
        """Stops reading the partition. Its fetch in flight is awaited (at most a couple of
        seconds), and what it fetched goes back to the stream at once (nak) for the next owner,
        rather than after the ack wait."""
        feed = self.feeds.pop(partition)
        msgs: list[Msg] = []
        with contextlib.suppress(Exception):
            msgs = await feed.ahead
        await _give_back(msgs)
        with contextlib.suppress(messaging.NatsError, TimeoutError):
            await feed.sub.unsubscribe()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(p) for p in list(self.feeds)))

    async def ready(self, timeout: float) -> list[tuple[Feed, list[Msg]]]:
        """The batches fetched by now (waiting up to `timeout` for one), at most FETCH_BATCH
        messages in all unless one batch alone is more, the partitions taking turns to go first.
        Each partition whose batch is taken starts fetching its next."""
        if not self.feeds:
            await asyncio.sleep(timeout)
            return []
        await asyncio.wait([f.ahead for f in self.feeds.values()], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        self.turn += 1
        out: list[tuple[Feed, list[Msg]]] = []
        total = 0
        for feed in sorted(self.feeds.values(), key=lambda f: (f.partition - self.turn) % self.partitions):
            if not feed.ahead.done():
                continue
            try:
                msgs = feed.ahead.result()
            except TimeoutError:  # nats-py raises it when no message came
                msgs = []
            except messaging.NatsError as exc:
                log.warning("fetch failed", extra={"error": repr(exc), "durable": feed.durable})
                feed.ahead = asyncio.create_task(_fetch(feed.sub, delay=0.5))
                continue
            if msgs and out and total + len(msgs) > FETCH_BATCH:
                continue  # kept for the next transaction
            feed.ahead = asyncio.create_task(_fetch(feed.sub))
            if msgs:  # a paused consumer answers a pull with a status, not messages
                out.append((feed, msgs))
                total += len(msgs)
        return out


@dataclass
class Feed:
    partition: int
    durable: str
    sub: JetStreamContext.PullSubscription
    ahead: asyncio.Task[list[Msg]]


async def _fetch(sub: JetStreamContext.PullSubscription, delay: float = 0.0) -> list[Msg]:
    if delay:
        await asyncio.sleep(delay)
    return await messaging.next_batch(sub, FETCH_BATCH)


async def _give_back(msgs: Sequence[Msg]) -> None:
    for msg in msgs:
        with contextlib.suppress(messaging.NatsError, TimeoutError):
            await msg.nak()


async def rebalance(own: partitions.Ownership, feeds: Feeds, lease: float) -> None:
    """Ends hung members' sessions; gives back the partitions above the fair share (their last
    batch is committed and acked: this runs between batches), then takes free ones up to it."""
    await own.end_silent_members(lease)
    fair = await own.fair_share()
    extra = partitions.to_release(own.owned, fair)
    if extra:
        await asyncio.gather(*(feeds.close(p) for p in extra))
        await own.release(extra)
    taken = await own.take(fair)
    await asyncio.gather(*(feeds.open(p) for p in taken))
    if extra or taken:
        log.info("partitions rebalanced", extra={"owned": sorted(own.owned), "released": extra, "taken": taken,
                                                 "fair_share": fair})


async def apply_retrying(conn: Conn, items: list[Incoming], models: Sequence[ReadModel], check: Check,
                         checkpoints: dict[str, int], settings: Settings, hooks: CrashHooks) -> list[Decision]:
    """apply_batch, again at once when the database chose it as a deadlock's victim: batches of
    other partitions (another process's) may add to the same customer's or product's row."""
    for attempt in range(1, DEADLOCK_RETRIES + 1):
        try:
            return await apply_batch(conn, items, models, check, checkpoints=checkpoints,
                                     max_gap_deliveries=settings.projector_max_gap_deliveries,
                                     before_commit=hooks.before_commit)
        except psycopg.errors.TransactionRollback as exc:
            if attempt == DEADLOCK_RETRIES:
                raise
            log.info("batch rolled back by the database, retried", extra={"error": repr(exc), "attempt": attempt})
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


async def consume(
    js: JetStreamContext,
    conn_factory: Callable[[], Awaitable[Conn]],
    settings: Settings,
    stop: asyncio.Event,
    *,
    on_committed: OnCommitted | None = None,
    durable: str = DURABLE,
    models: Sequence[ReadModel] = MODELS,
) -> None:
    """The loop: keep this process's fair share of the partitions, fetch from them, apply what
    came in one transaction, commit, hook, ack. A lost database connection took the partitions'
    locks with it: every partition is given up, and taken anew on a new connection."""
    check = fault_check(settings.projector_fault_aggregates)
    hooks = CrashHooks(settings.projector_crash_before_commit, settings.projector_crash_after_commit)
    await messaging.ensure_stream(js, settings.stream_name, settings.stream_max_msgs, settings.stream_max_bytes,
                                   settings.stream_replicas)
    await partitions.ensure_consumers(js, settings.stream_name, durable, settings.partitions)
    feeds = Feeds(js, settings.stream_name, durable, settings.partitions)
    loop = asyncio.get_running_loop()
    conn: Conn | None = None
    own: partitions.Ownership | None = None
    next_check = 0.0
    msgs: list[Msg] = []
    try:
        while not stop.is_set():
            try:
                if conn is None or own is None or conn.closed:
                    conn = await conn_factory()
                    own = partitions.Ownership(conn, settings.partitions)
                    await own.join()
                    next_check = 0.0  # take a share at once: a projector just started has a backlog
                if loop.time() >= next_check:
                    await rebalance(own, feeds, settings.projector_lease_seconds)
                    next_check = loop.time() + CHECK_SECONDS
                ready = await feeds.ready(max(0.0, next_check - loop.time()))
                if not ready:
                    metrics.idle()
                    continue
                msgs = [m for _, batch in ready for m in batch]
                batch = read(msgs)
                checkpoints: dict[str, int] = {}
                for item, feed in zip(batch.items, (f for f, b in ready for _ in b)):
                    checkpoints[feed.durable] = max(checkpoints.get(feed.durable, 0), item.stream_seq)
                with _batch_span(batch, durable):
                    decisions = await apply_retrying(conn, batch.items, models, check, checkpoints, settings, hooks)
            except psycopg.errors.LockNotAvailable:
                # A row or lock held for longer than the lease, e.g. by a hung projector's open
                # transaction: the batch goes back, and the check at once ends that session.
                log.warning("a batch waited longer than the lease for a lock; given back")
                await _give_back(msgs)
                msgs = []
                next_check = 0.0
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # Nothing committed: the batch goes back to the stream, and so do the partitions.
                log.warning("database unavailable, batch and partitions given up", extra={"error": repr(exc)})
                await _give_back(msgs)
                msgs = []
                await feeds.close_all()
                if conn is not None:
                    await conn.close()
                conn = own = None
                await asyncio.sleep(0.5)
                continue
            applied = applied_events(decisions)
            if on_committed is not None and applied:
                await on_committed(applied)
            hooks.after_commit()
            for msg, decision in zip(msgs, decisions):
                await settle(msg, decision)
            metrics.batch_done(decisions, sum(b[-1].metadata.num_pending for _, b in ready), msgs[0].metadata.timestamp)
            msgs = []
    finally:
        await _give_back(msgs)
        await feeds.close_all()  # whatever they fetched goes back to the stream for the next owner
        if conn is not None:
            await conn.close()

@dataclass(frozen=True)
class Batch:
    """Fetched messages as the decision needs them, and the links to their traces."""

    items: list[Incoming]
    links: list[trace.Link]


def read(msgs: list[Msg]) -> Batch:
    """Everything the batch's transaction and span need from the messages, read before either."""
    items = [incoming(m) for m in msgs]
    # Each message's own trace: the relay's publish, in the trace of the command that caused it.
    linked = (telemetry.event_span_context(item.headers) for item in items)
    return Batch(items, [trace.Link(c) for c in linked if c.is_valid])


def _batch_span(batch: Batch, durable: str) -> Any:
    """One CONSUMER span for the batch, linked to every message's own trace (one span per batch,
    as the messaging conventions allow; each applied order's notice later continues its
    message's trace itself)."""
    return telemetry.tracer.start_as_current_span(
        f"process {messaging.SUBJECT_PREFIX}",
        kind=SpanKind.CONSUMER,
        links=batch.links,
        # The batch's messages come from many subjects: the destination is the subscription's filter.
        attributes=semconv.messaging(
            semconv.PROCESS, f"{messaging.SUBJECT_PREFIX}.>", template=messaging.EVENT_SUBJECT_TEMPLATE,
            **{semconv.MESSAGING_CONSUMER_GROUP_NAME: durable,
               semconv.MESSAGING_DESTINATION_SUBSCRIPTION_NAME: durable,
               semconv.MESSAGING_BATCH_MESSAGE_COUNT: len(batch.items)}),
    )


def collect_less() -> None:
    """Garbage collection tuned for batches: a batch makes tens of thousands of short-lived
    objects that reference counting frees at its end, yet at the default threshold (700) they set
    off collections mid-batch that also scanned everything the process had built before (over a
    tenth of the projector's time). What exists now, once set up, is frozen out of collections,
    and the young generation is collected every 50,000 net allocations: cycles are still freed."""
    process.freeze_heap()
    gc.set_threshold(50_000)


async def run(settings: Settings, on_committed: OnCommitted | None = None) -> None:
    """Composition root of the projector process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = settings.role_database_url("projector")
    telemetry.serve_metrics(settings.metrics_addr)

    async def connect() -> Conn:  # named, so `orders status` tells who owns which partition
        # A batch waits for a lock at most as long as a member may stay silent (see rebalance).
        lock_timeout = round(settings.projector_lease_seconds * 1000)
        return await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=partitions.member_name(),
                                                     options=f"-c lock_timeout={lock_timeout}")

    nc = await messaging.connect(settings.require_nats_url(), "orders-projector", settings.nats_access)
    js = nc.jetstream()
    views = notices.Notices(nc, connect)
    on_committed = on_committed or views.publish_applied
    counter = asyncio.create_task(metrics.count_dead_letters(connect, stop))
    collect_less()
    try:
        await messaging.keep_consuming(lambda: consume(js, connect, settings, stop, on_committed=on_committed),
                                       DURABLE, stop, (messaging.NatsError, OSError, psycopg.OperationalError))
    finally:
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        await views.close()
        await messaging.close(nc)

