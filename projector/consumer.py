"""The durable consumer: applies a batch of events and its checkpoint in one transaction, then
acks. Event v of an aggregate is applied only on top of v-1: a lower or equal version is a
duplicate (acked, no effect), a higher one waits for the gap to fill (nak with a delay)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import api
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orders.v1 import events_pb2
from projector import notices, projections, read_model
from server import messaging
from server.config import Settings

log = logging.getLogger(__name__)

DURABLE = "projector"
FETCH_BATCH = 200
GAP_DELAY_SECONDS = 1.0
RETRY_DELAY_SECONDS = 2.0
# A projector killed mid-batch leaves its messages unacked; another gets them after this long.
# A batch commits in well under a second, so this leaves a wide margin.
ACK_WAIT_SECONDS = 5.0


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    POISON = "poison"
    FAILED = "failed"


async def _apply_one(conn: AsyncConnection, msg: Msg) -> Outcome:
    try:
        env = events_pb2.Envelope.FromString(msg.data)
    except DecodeError:
        return Outcome.POISON
    apply = projections.APPLY.get(env.WhichOneof("payload") or "")
    if apply is None or not env.aggregate_id or env.aggregate_version < 1:
        return Outcome.POISON
    current = await read_model.applied_version(conn, env.tenant_id, env.aggregate_type, env.aggregate_id, lock=True)
    if env.aggregate_version <= current:
        return Outcome.DUPLICATE
    if env.aggregate_version > current + 1:
        return Outcome.GAP
    await apply(conn, env, msg.metadata.sequence.stream)
    await read_model.set_applied_version(conn, env.tenant_id, env.aggregate_type, env.aggregate_id, env.aggregate_version)
    return Outcome.APPLIED


async def apply_batch(engine: AsyncEngine, msgs: list[Msg]) -> list[Outcome]:
    """Applies msgs in one transaction; if that fails, each in its own so one bad event can't
    hold back the others."""
    try:
        async with engine.begin() as conn:
            outcomes = [await _apply_one(conn, msg) for msg in msgs]
            await read_model.save_checkpoint(conn, DURABLE, max(m.metadata.sequence.stream for m in msgs))
        return outcomes
    except Exception:
        if len(msgs) == 1:
            log.exception("event failed to apply", extra={"stream_seq": msgs[0].metadata.sequence.stream})
            return [Outcome.FAILED]
    return [(await apply_batch(engine, [msg]))[0] for msg in msgs]


async def settle(msg: Msg, outcome: Outcome) -> None:
    """Tells the stream what became of a message, strictly after the transaction committed."""
    match outcome:
        case Outcome.APPLIED | Outcome.DUPLICATE:
            await msg.ack()
        case Outcome.GAP:
            await msg.nak(delay=GAP_DELAY_SECONDS)
        case Outcome.FAILED:
            await msg.nak(delay=RETRY_DELAY_SECONDS)
        case Outcome.POISON:
            log.error("undecodable or unknown event terminated", extra={"stream_seq": msg.metadata.sequence.stream})
            await msg.term()


def consumer_config() -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=2000,
        filter_subject=f"{messaging.SUBJECT_PREFIX}.>",
    )


async def run(settings: Settings) -> None:
    """Composition root of the projector process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = create_async_engine(settings.require_database_url(), pool_size=2, pool_pre_ping=True)
    nc = await messaging.connect(settings.require_nats_url(), "orders-projector")
    js = nc.jetstream()
    sub = None
    try:
        while sub is None and not stop.is_set():
            try:
                await messaging.ensure_stream(js, settings.stream_name)
                sub = await js.pull_subscribe(
                    f"{messaging.SUBJECT_PREFIX}.>", durable=DURABLE, stream=settings.stream_name, config=consumer_config()
                )
            except (messaging.NatsError, OSError) as exc:
                log.warning("cannot bind the consumer yet", extra={"error": repr(exc)})
                await asyncio.sleep(1)
        log.info("consuming", extra={"durable": DURABLE})
        while sub is not None and not stop.is_set():
            try:
                msgs = await sub.fetch(batch=FETCH_BATCH, timeout=1)
            except TimeoutError:  # nats-py raises it when no message came; both kinds
                continue
            except messaging.NatsError as exc:
                log.warning("fetch failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            outcomes = await apply_batch(engine, msgs)
            # Committed: tell the query servers' watchers which orders changed.
            await notices.publish_applied(nc, engine, [
                (events_pb2.Envelope.FromString(m.data), m.metadata.sequence.stream)
                for m, o in zip(msgs, outcomes) if o is Outcome.APPLIED
            ])
            for msg, outcome in zip(msgs, outcomes):
                await settle(msg, outcome)
            applied = sum(o is Outcome.APPLIED for o in outcomes)
            if applied:
                log.info("applied", extra={"events": applied, "last_seq": msgs[-1].metadata.sequence.stream})
    finally:
        if sub is not None:
            with contextlib.suppress(messaging.NatsError, TimeoutError):
                await sub.unsubscribe()
        await messaging.close(nc)
        await engine.dispose()
