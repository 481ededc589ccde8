"""The relay's own encoding of a staged message (messaging.hpub) is byte for byte what nats-py's
publish writes, for any subject and headers; what it does not take on, nats-py does."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js import api

from server.platform import messaging


def nats_py_bytes(subject: str, payload: bytes, headers: dict[str, str]) -> bytes:
    """What nats-py queues for publish(subject, payload, headers=headers)."""
    written: list[bytes] = []

    async def capture(command: bytes, priority: bool = False) -> None:
        written.append(command)

    nc = Client()
    nc._send_command = capture  # type: ignore[method-assign,assignment]
    asyncio.run(nc._send_publish(subject, "", payload, len(payload), headers))
    return b"".join(written)


token = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=12)
text = st.text(max_size=40)  # any character: spaces, CR/LF, beyond ASCII
event_headers = st.fixed_dictionaries({
    "correlation_id": st.uuids().map(str), "traceparent": st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    "Nats-Msg-Id": st.uuids().map(str), api.Header.BATCH_SEQUENCE: st.integers(1, 1000).map(str),
})


@given(st.one_of(token, text), st.binary(max_size=64), st.one_of(event_headers, st.dictionaries(st.one_of(token, text), text, max_size=4)))
def test_a_staged_message_is_encoded_as_nats_py_encodes_it(subject: str, payload: bytes, headers: dict[str, str]) -> None:
    ours = messaging.hpub(subject, payload, headers)
    try:
        theirs = nats_py_bytes(subject, payload, headers)
    except Exception:
        assert ours is None  # nats-py refuses it: publish() is left to say so
        return
    assert ours is None or ours == theirs


def test_the_relay_s_messages_take_the_cheap_encoding() -> None:
    headers: dict[str, str] = {"correlation_id": "c-1", "causation_id": "r-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
               "Nats-Msg-Id": "3f1c5e0e-1b1e-4c55-a7d6-3b0f1f0e9a11", api.Header.BATCH_ID: "b" * 32, api.Header.BATCH_SEQUENCE: "7"}
    subject = "orders.events.default.order.3.o-1"
    assert messaging.hpub(subject, b"\x00payload", headers) == nats_py_bytes(subject, b"\x00payload", headers)
