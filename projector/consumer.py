"""The durable consumer: applies a batch of events and its checkpoint in one transaction, then
acks. Event v of an aggregate is applied only on top of v-1: a lower or equal version is a
duplicate (acked, no effect), a higher one waits for the gap to fill (nak with a delay) and, after
ORDERS_PROJECTOR_MAX_GAP_DELIVERIES tries, becomes a dead letter. Fetches take what is there, up
to FETCH_BATCH: a large backlog goes many events per transaction, a trickle one at a time."""

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
from nats.js import JetStreamContext, api
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from projector import DURABLE, metrics, notices
from projector.decide import Decision, Incoming, Outcome
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
# A projector killed mid-batch leaves its messages unacked; another gets them after this long.
# A batch commits in well under a second, so this leaves a wide margin.
ACK_WAIT_SECONDS = 5.0

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


def consumer_config() -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=20_000,
        filter_subject=f"{messaging.SUBJECT_PREFIX}.>",
    )


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
    """The loop: fetch, apply in one transaction, commit, hook, ack. Reconnects on DB errors."""
    check = fault_check(settings.projector_fault_aggregates)
    hooks = CrashHooks(settings.projector_crash_before_commit, settings.projector_crash_after_commit)
    await messaging.ensure_stream(js, settings.stream_name, settings.stream_max_msgs, settings.stream_max_bytes,
                                   settings.stream_replicas)
    config = consumer_config()
    config.durable_name = durable
    sub = await js.pull_subscribe(config.filter_subject or "", durable=durable, stream=settings.stream_name, config=config)
    conn: Conn | None = None
    # The next batch is fetched while this one is applied, so the stream and the database work
    # at the same time; batches are still applied strictly one after the other.
    ahead = asyncio.create_task(messaging.next_batch(sub, FETCH_BATCH))
    try:
        while not stop.is_set():
            try:
                msgs = await ahead
            except TimeoutError:  # nats-py raises it when no message came
                metrics.idle()
                continue
            except messaging.NatsError as exc:
                log.warning("fetch failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            finally:
                if not stop.is_set():
                    ahead = asyncio.create_task(messaging.next_batch(sub, FETCH_BATCH))
            if not msgs:  # a paused consumer answers a pull with a status, not messages
                metrics.idle()
                continue
            batch = read(msgs)
            try:
                if conn is None or conn.closed:
                    conn = await conn_factory()
                with _batch_span(batch, durable):
                    decisions = await apply_batch(
                        conn, batch.items, models, check, consumer=durable,
                        max_gap_deliveries=settings.projector_max_gap_deliveries, before_commit=hooks.before_commit,
                    )
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # Nothing committed: leave the messages unacked; they come back after ack_wait.
                log.warning("database unavailable, batch left for redelivery", extra={"error": repr(exc)})
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(0.5)
                continue
            applied = applied_events(decisions)
            if on_committed is not None and applied:
                await on_committed(applied)
            hooks.after_commit()
            for msg, decision in zip(msgs, decisions):
                await settle(msg, decision)
            metrics.batch_done(decisions, msgs[-1].metadata.num_pending, msgs[0].metadata.timestamp)
    finally:
        ahead.cancel()  # whatever it fetched stays unacked and comes back to the next projector
        await asyncio.gather(ahead, return_exceptions=True)
        with contextlib.suppress(messaging.NatsError, TimeoutError):
            await sub.unsubscribe()
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

    async def connect() -> Conn:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)

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

