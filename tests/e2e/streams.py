"""Reading the events stream back in tests: every message, in stream order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats

from orders.v1 import events_pb2

STREAM = "ORDERS_EVENTS"


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str | None
    msg_id: str
    envelope: events_pb2.Envelope


def read_stream(nats_url: str) -> list[Stored]:
    """Every message in the stream, in sequence order."""

    async def read() -> list[Stored]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            stored = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(STREAM, seq)
                headers = msg.headers or {}
                stored.append(Stored(seq, msg.subject, headers.get("Nats-Msg-Id", ""),
                                     events_pb2.Envelope.FromString(msg.data or b"")))
            return stored
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_messages(nats_url: str) -> int:
    async def count() -> int:
        nc = await nats.connect(nats_url)
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())
