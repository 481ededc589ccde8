"""The events stream in tests: every message read back in stream order, and events published
straight into it, as a misbehaving or forged publisher could."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

import nats
from google.protobuf import timestamp_pb2

from orders.v1 import events_pb2, types_pb2
from server.config import NatsAccess
from server.platform import messaging

STREAM = "ORDERS_EVENTS"


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str | None
    msg_id: str
    envelope: events_pb2.Envelope
    batch_id: str = ""  # the atomic batch it came in (Nats-Batch-Id)


def read_stream(nats_url: str) -> list[Stored]:
    """Every message in the stream, in sequence order."""

    async def read() -> list[Stored]:
        nc = await nats.connect(**messaging.server_options(nats_url, NatsAccess()))  # a cluster's too
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            stored = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(STREAM, seq)
                headers = msg.headers or {}
                stored.append(Stored(seq, msg.subject, headers.get("Nats-Msg-Id", ""),
                                     events_pb2.Envelope.FromString(msg.data or b""), headers.get("Nats-Batch-Id", "")))
            return stored
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_messages(nats_url: str) -> int:
    async def count() -> int:
        nc = await nats.connect(**messaging.server_options(nats_url, NatsAccess()))  # a cluster's too
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def envelope(order_id: str, version: int, customer_id: str = "c-direct", tenant_id: str = "default") -> events_pb2.Envelope:
    """Version 1 places the order (two of p-direct at 5 EUR), 2 confirms it, 3 ships it."""
    occur = timestamp_pb2.Timestamp()
    occur.GetCurrentTime()
    env = events_pb2.Envelope(event_id=str(uuid.uuid4()), tenant_id=tenant_id, aggregate_type="order",
                              aggregate_id=order_id, aggregate_version=version, occur_time=occur)
    if version == 1:
        env.order_placed.CopyFrom(events_pb2.OrderPlaced(
            order_id=order_id, customer_id=customer_id,
            lines=[types_pb2.OrderLine(product_id="p-direct", quantity=2,
                                       unit_price=types_pb2.Money(currency_code="EUR", units=5))],
            total=types_pb2.Money(currency_code="EUR", units=10)))
    elif version == 2:
        env.order_confirmed.order_id = order_id
    else:
        env.order_shipped.order_id = order_id
    env.event_type = env.WhichOneof("payload") or ""
    return env


def garbage() -> bytes:
    """Bytes no Envelope decodes from: they open with a field tag longer than a varint may be
    (random bytes alone sometimes parse, as an envelope of unknown fields and no payload)."""
    return b"\xff" * 16 + os.urandom(48)


def publish(nats_url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publishes straight to the stream, each with its own Nats-Msg-Id, as a misbehaving relay could."""
    async def go() -> None:
        nc = await nats.connect(**messaging.server_options(nats_url, NatsAccess()))  # a cluster's too
        js = nc.jetstream()
        # The relay and projector create the stream when they start: do not race them to it.
        await messaging.ensure_stream(js, STREAM, max_msgs=-1, max_bytes=-1)
        for subject, data in messages:
            await js.publish(subject, data, headers={"Nats-Msg-Id": str(uuid.uuid4()), "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
        await nc.close()

    asyncio.run(go())
