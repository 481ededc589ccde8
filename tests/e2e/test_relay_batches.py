"""The relay's atomic batches: sequences, order across batch boundaries, events the stream
already has, and an event the stream refuses in the middle of a batch."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from server.devstack.embedded import EmbeddedNats
from server.platform import messaging
from server.platform.schema import NOTIFY_CHANNEL
from tests.e2e.streams import STREAM, envelope, read_stream
from tests.harness import Stack, scalar, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def relays(database_url: str, own_nats: EmbeddedNats, tmp_path: Path, db: psycopg.Connection) -> Iterator[Stack]:
    """No role running yet: each test starts its relays. Whatever a test leaves unpublished is
    marked published after it, so the next test's relay does not find it."""
    stack = Stack(database_url, own_nats.url, tmp_path)
    yield stack
    stack.stop_all()
    db.execute("UPDATE events SET published_at = now() WHERE published_at IS NULL")


def commit(db: psycopg.Connection, events: list[tuple[str, int]], oversize: tuple[str, int] | None = None) -> list[str]:
    """Commits one event per (order id, version), in this order, as a command server would, and
    wakes the relay; the `oversize` one is larger than the stream takes. Returns the event ids."""
    ids = []
    with db.transaction():
        for order_id, version in events:
            env = envelope(order_id, min(version, 3))
            env.aggregate_version = version
            payload = bytes(messaging.MAX_EVENT_BYTES + 1) if (order_id, version) == oversize else env.SerializeToString()
            db.execute(
                "INSERT INTO events (event_id, tenant_id, aggregate_type, aggregate_id, aggregate_version, event_type,"
                " payload) VALUES (%s, 'default', 'order', %s, %s, %s, %s)",
                (env.event_id, order_id, version, env.event_type, payload),
            )
            ids.append(env.event_id)
        db.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return ids


def published(db: psycopg.Connection, event_ids: list[str]) -> dict[str, tuple[int, int | None]]:
    """Event id -> (version, stream sequence recorded) of those among `event_ids` the relay marked."""
    rows = db.execute("SELECT event_id::text, aggregate_version, stream_seq FROM events"
                      " WHERE event_id = ANY(%s::uuid[]) AND published_at IS NOT NULL", (event_ids,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_every_event_of_a_backlog_bigger_than_an_atomic_batch_is_in_the_stream_at_the_sequence_recorded(
    relays: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    orders = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(13)]
    # Version-major: every relay batch and every atomic batch holds a piece of every order.
    ids = commit(db, [(order, version) for version in range(1, 201) for order in orders])
    relays.start("relay", ORDERS_RELAY_BATCH_SIZE="2500")

    wait_until(lambda: len(published(db, ids)) == len(ids), timeout=60, what="the backlog to be published")
    messages = read_stream(own_nats.url)
    marked = published(db, ids)
    assert sorted(m.msg_id for m in messages) == sorted(ids)  # each once
    assert {m.msg_id: m.seq for m in messages} == {event_id: seq for event_id, (_, seq) in marked.items()}
    versions: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        versions[message.envelope.aggregate_id].append(marked[message.msg_id][0])
    assert all(versions[order] == list(range(1, 201)) for order in orders)
    batches: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        batches[message.batch_id].append(message.seq)
    assert "" not in batches  # every message came in an atomic batch
    assert max(len(seqs) for seqs in batches.values()) == messaging.ATOMIC_BATCH_MAX
    assert all(seqs == list(range(seqs[0], seqs[0] + len(seqs))) for seqs in batches.values())  # side by side
    assert "batch refused" not in relays.log("relay")


def stream_versions(db: psycopg.Connection, nats_url: str, ids: list[str]) -> dict[str, list[int]]:
    """Once every event of `ids` is published: each aggregate's versions in stream order."""
    wait_until(lambda: len(published(db, ids)) == len(ids), timeout=60, what="every event to be published")
    marked = published(db, ids)
    versions: dict[str, list[int]] = defaultdict(list)
    for message in read_stream(nats_url):
        versions[message.envelope.aggregate_id].append(marked[message.msg_id][0])
    return versions


def test_order_holds_across_relay_batches_of_a_few_events(
    relays: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    orders = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    relays.start("relay", ORDERS_RELAY_BATCH_SIZE="3")
    ids = commit(db, [(order, version) for version in range(1, 31) for order in orders])

    versions = stream_versions(db, own_nats.url, ids)
    assert all(versions[order] == list(range(1, 31)) for order in orders)


def test_events_committed_one_by_one_while_batches_follow_each_other_are_all_published_in_order(
    relays: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    """The relay reads the next batch with the statement that marks one, and drops the NOTIFYs
    received meanwhile: none of the commits they announced may be left behind."""
    orders = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    relays.start("relay", ORDERS_RELAY_BATCH_SIZE="2")
    ids = []
    for version in range(1, 41):
        for order in orders:
            ids += commit(db, [(order, version)])  # a transaction and a NOTIFY each

    versions = stream_versions(db, own_nats.url, ids)
    assert all(versions[order] == list(range(1, 41)) for order in orders)


def test_a_batch_holding_events_the_stream_has_is_sent_again_one_by_one_and_each_event_stays_once(
    relays: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    orders = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    first = commit(db, [(order, version) for version in range(1, 6) for order in orders])
    relays.start("relay", "relay-1")
    wait_until(lambda: len(published(db, first)) == len(first), what="the first events to be published")
    relays.kill("relay-1")
    before = published(db, first)
    # As after a crash between publish and mark: every other event is in the stream, not marked.
    again = first[::2]
    db.execute("UPDATE events SET published_at = NULL WHERE event_id = ANY(%s::uuid[])", (again,))
    later = commit(db, [(order, version) for version in range(6, 11) for order in orders])

    relays.start("relay", "relay-2")
    wait_until(lambda: len(published(db, first + later)) == len(first + later), what="every event to be published")
    messages = read_stream(own_nats.url)
    marked = published(db, first + later)
    assert sorted(m.msg_id for m in messages) == sorted(first + later)  # each once
    assert {event_id: marked[event_id] for event_id in again} == {event_id: before[event_id] for event_id in again}
    assert {m.msg_id: m.seq for m in messages} == {event_id: seq for event_id, (_, seq) in marked.items()}
    versions: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        versions[message.envelope.aggregate_id].append(marked[message.msg_id][0])
    assert all(versions[order] == list(range(1, 11)) for order in orders)
    log = relays.log("relay-2")
    assert "batch refused" in log and "publish refused" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert sum(int(line.get("duplicates", 0)) for line in lines) == len(again)


def test_an_event_the_stream_refuses_mid_batch_stops_its_aggregate_and_no_other(
    relays: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    stuck, others = f"o-{uuid.uuid4().hex[:8]}", [f"o-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    ids = commit(db, [(order, version) for version in range(1, 6) for order in [stuck, *others]],
                 oversize=(stuck, 3))
    relays.start("relay")

    wait_until(lambda: relays.log("relay").count("publish refused") >= 2, what="the refusal to be retried")
    marked = published(db, ids)
    versions: dict[str, list[int]] = defaultdict(list)
    for message in read_stream(own_nats.url):
        versions[message.envelope.aggregate_id].append(marked[message.msg_id][0])
    assert versions == {stuck: [1, 2], **{order: [1, 2, 3, 4, 5] for order in others}}
    assert scalar(db, "SELECT count(*) FROM events WHERE aggregate_id = %s AND published_at IS NULL", stuck) == 3
    assert "batch refused" in relays.log("relay")


def test_a_stream_made_without_atomic_batches_is_left_as_it_is_and_takes_the_events_one_by_one_in_order(
    relays: Stack, db: psycopg.Connection, own_nats: EmbeddedNats
) -> None:
    async def make_old_stream() -> bool | None:
        nc = await nats.connect(own_nats.url)
        try:
            config = messaging.stream_config(STREAM, max_msgs=-1, max_bytes=-1)
            config.allow_atomic = None  # as the code before atomic batches made it, or an operator chose
            return (await nc.jetstream().add_stream(config)).config.allow_atomic
        finally:
            await nc.close()

    assert not asyncio.run(make_old_stream())
    orders = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    ids = commit(db, [(order, version) for version in range(1, 5) for order in orders])
    relays.start("relay")

    wait_until(lambda: len(published(db, ids)) == len(ids), what="the events to be published")
    messages = read_stream(own_nats.url)
    assert not any(m.batch_id for m in messages)  # one by one: the stream was not changed to take batches
    marked = published(db, ids)
    versions: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        versions[message.envelope.aggregate_id].append(marked[message.msg_id][0])
    assert versions == {order: [1, 2, 3, 4] for order in orders}
    log = relays.log("relay")
    assert "stream differs from the configuration" in log and "allow_atomic: wanted True, the stream has False" in log
    assert "batch refused" not in log
