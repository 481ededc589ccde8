"""Several projector processes share the partitions: each partition applied by one at a time,
every aggregate's versions applied strictly in order across handovers (one joins, one is killed
with SIGKILL under load, another joins), and afterwards every read model equals the write tables:
each acknowledged order once, with its version and exact total, and a watcher saw each of its
customer's orders reach that version. And a deployment that ran the single durable of old: the
partitions' consumers take over from its position."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import nats
import psycopg
import pytest

from orders.v1 import query_service_pb2 as query_pb
from projector import partitions
from projector.decide import Incoming
from projector.store import apply_batch, fault_check
from projector.views import MODELS
from server.config import libpq_url
from server.devstack.embedded import EmbeddedNats
from server.platform import messaging
from tests.e2e.client import new_id, queries
from tests.e2e.projection import Traffic, lagging_aggregates, read_model_differences
from tests.e2e.streams import envelope
from tests.harness import Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e
PARTITIONS = 16
EVENTS = 1_500

# Test-only record of every applied version: which backend wrote it, and which partitions' locks
# that backend held at that moment. (The trigger runs as the table's owner: SECURITY DEFINER.)
HISTORY = f"""
    CREATE TABLE applied_history (
        id bigserial PRIMARY KEY, aggregate_id text NOT NULL, version bigint NOT NULL, pid int NOT NULL,
        held int[] NOT NULL);
    CREATE FUNCTION record_applied() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        INSERT INTO applied_history (aggregate_id, version, pid, held)
        SELECT NEW.aggregate_id, NEW.version, pg_backend_pid(),
               ARRAY(SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND granted
                     AND classid = {partitions.PARTITION_CLASS} AND objsubid = 2 AND pid = pg_backend_pid());
        RETURN NULL;
    END $$;
    CREATE TRIGGER record_applied AFTER INSERT OR UPDATE ON applied_versions
        FOR EACH ROW EXECUTE FUNCTION record_applied();
"""


def owners(db: psycopg.Connection[Any]) -> dict[int, str]:
    """partition -> the owning process's name (orders-projector <host>:<pid>)."""
    return dict(db.execute(partitions.OWNERS, (partitions.PARTITION_CLASS,)).fetchall())


def shares(db: psycopg.Connection[Any], *procs: Any) -> list[int]:
    """How many partitions each of `procs` owns, in their order."""
    counts = Counter(name.rsplit(":", 1)[-1] for name in owners(db).values())
    return [counts[str(p.pid)] for p in procs]


def test_partitions_move_between_projectors_and_every_event_is_applied_once_in_order(
        database_url: str, nats_url: str, tmp_path: Path) -> None:
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    db.execute(HISTORY)
    stack = Stack(database_url, nats_url, tmp_path)
    try:
        for role in ("command-server", "query-server", "relay"):
            stack.start(role)
        a = stack.start("projector", "projector-a")
        wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
        traffic = Traffic(stack.command_addr)
    except BaseException:
        stack.stop_all()
        db.close()
        raise
    writer = threading.Thread(target=traffic.run, args=(10**9,))  # until stopped
    watched = traffic.customers[1]
    seen: dict[str, list[int]] = defaultdict(list)  # a WatchOrders client's versions of each order
    _, query = queries(stack.query_addr)
    stream = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=watched), timeout=300, wait_for_ready=True)

    def watch() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for message in stream:
                if message.HasField("update"):
                    seen[message.update.summary.order_id].append(message.update.summary.version)

    watcher = threading.Thread(target=watch)
    try:
        wait_until(lambda: stack.alive() and shares(db, a) == [PARTITIONS], timeout=60, what="A owns every partition")
        watcher.start()
        writer.start()

        # Given A applies everything, when B joins, then they hold half each.
        b = stack.start("projector", "projector-b")
        wait_until(lambda: stack.alive() and shares(db, a, b) == [8, 8], timeout=60, what="A and B share 8/8")
        wait_until(lambda: traffic.events > EVENTS // 3, timeout=120, what="traffic under way")

        # When A is killed under load, then B takes every partition within a few seconds.
        stack.kill("projector-a", signal.SIGKILL)
        stack.procs.pop("projector-a")  # its death is this test's doing
        wait_until(lambda: shares(db, b) == [PARTITIONS], timeout=15, what="B owns every partition")

        # When C joins, then B gives half to it.
        c = stack.start("projector", "projector-c")
        wait_until(lambda: stack.alive() and shares(db, b, c) == [8, 8], timeout=60, what="B and C share 8/8")
        enough = max(EVENTS, traffic.events + EVENTS // 5)  # C applies some too
        wait_until(lambda: traffic.events >= enough, timeout=120, what="more traffic with B and C")
        traffic.stop.set()
        writer.join()
        wait_until(lambda: lagging_aggregates(db) == 0, timeout=120, what="every event applied")

        assert scalar(db, "SELECT count(*) FROM events") == traffic.events >= EVENTS
        assert read_model_differences(db) == {}
        assert scalar(db, "SELECT count(*) FROM dead_letters") == 0
        history = db.execute("SELECT aggregate_id, version, pid, held FROM applied_history ORDER BY id").fetchall()
        # Each partition applied only by the backend holding its lock at that moment.
        strays = [(agg, v) for agg, v, _, held in history if messaging.partition_of(agg, PARTITIONS) not in held]
        assert strays == []
        # Every aggregate's versions applied strictly in order.
        versions: dict[str, list[int]] = defaultdict(list)
        for agg, version, _, _ in history:
            versions[agg].append(version)
        assert [agg for agg, vs in versions.items() if vs != sorted(set(vs))] == []
        # The partitions did move: three backends (A, B, C) applied events.
        assert len({pid for _, _, pid, _ in history}) >= 3
        # A watcher saw every order of its customer reach its last version, never going back.
        final: dict[str, int] = dict(db.execute("SELECT order_id, version FROM order_summaries WHERE customer_id = %s",
                                                (watched,)).fetchall())
        assert final
        wait_until(lambda: {o: vs[-1] for o, vs in list(seen.items())} == final, timeout=30,
                   what="the watcher at every order's last version")
        assert [o for o, vs in seen.items() if vs != sorted(vs)] == []
    finally:
        stream.cancel()
        if watcher.is_alive():
            watcher.join(timeout=30)
        traffic.stop.set()
        if writer.is_alive():
            writer.join(timeout=60)
        traffic.close()
        db.close()
        stack.stop_all()


def test_partition_consumers_take_over_after_the_single_durables_ack_floor(own_nats: EmbeddedNats) -> None:
    """Given the single durable of old acked the first 6 of 10 events, when the partitions'
    consumers are made, then together they have the other 4 to deliver, and the old one is gone."""
    stream, durable = "ORDERS_EVENTS", "projector"

    async def scenario() -> tuple[set[int | None], int, list[str]]:
        nc = await nats.connect(own_nats.url)
        try:
            js = nc.jetstream()
            await messaging.ensure_stream(js, stream, -1, -1)
            for n in range(10):
                await js.publish(messaging.subject_for("default", "order", f"o-{n}", PARTITIONS), b"event")
            sub = await js.pull_subscribe(f"{messaging.SUBJECT_PREFIX}.>", durable=durable, stream=stream)
            for msg in await sub.fetch(6, timeout=5):
                await msg.ack_sync()
            await sub.unsubscribe()

            await partitions.ensure_consumers(js, stream, durable, PARTITIONS)

            infos = [await js.consumer_info(stream, partitions.durable_of(durable, p)) for p in range(PARTITIONS)]
            return ({i.config.opt_start_seq for i in infos}, sum(i.num_pending or 0 for i in infos),
                    sorted(i.name for i in await js.consumers_info(stream)))
        finally:
            await nc.close()

    starts, pending, names = asyncio.run(scenario())
    assert starts == {7}
    assert pending == 4
    assert names == sorted(partitions.durable_of(durable, p) for p in range(PARTITIONS))


def test_a_hung_projector_loses_its_partitions_to_the_other_and_takes_its_share_again_when_it_resumes(
        database_url: str, nats_url: str, tmp_path: Path) -> None:
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    stack = Stack(database_url, nats_url, tmp_path)
    lease = {"ORDERS_PROJECTOR_LEASE_SECONDS": "3"}  # the default is 10
    try:
        for role in ("command-server", "query-server", "relay"):
            stack.start(role)
        a = stack.start("projector", "projector-a", **lease)
        b = stack.start("projector", "projector-b", **lease)
        wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
        traffic = Traffic(stack.command_addr)
        writer = threading.Thread(target=traffic.run, args=(10**9,))  # until stopped
    except BaseException:
        stack.stop_all()
        db.close()
        raise
    try:
        wait_until(lambda: stack.alive() and shares(db, a, b) == [8, 8], timeout=60, what="A and B share 8/8")
        writer.start()
        wait_until(lambda: traffic.events > 200, timeout=120, what="traffic under way")

        # When A hangs (alive, connected, holding its locks, doing nothing), then B takes every
        # partition once A's session has run nothing for the lease.
        a.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: shares(db, b) == [PARTITIONS], timeout=20, what="B owns every partition")
            applied = scalar(db, "SELECT count(*) FROM applied_versions")
            wait_until(lambda: scalar(db, "SELECT count(*) FROM applied_versions") > applied + 20, timeout=60,
                       what="B applying the hung A's partitions")
        finally:
            a.send_signal(signal.SIGCONT)
        # Resumed, A finds its session ended, joins again and takes its share back.
        wait_until(lambda: stack.alive() and shares(db, a, b) == [8, 8], timeout=60, what="A back, 8/8")
        traffic.stop.set()
        writer.join()
        wait_until(lambda: lagging_aggregates(db) == 0, timeout=120, what="every event applied")
        assert read_model_differences(db) == {}
        assert scalar(db, "SELECT count(*) FROM dead_letters") == 0
        assert "ran nothing for longer than its lease" in stack.log("projector-b")
    finally:
        traffic.stop.set()
        if writer.is_alive():
            writer.join()
        stack.stop_all()
        db.close()


def test_batches_of_two_projectors_stamp_their_changes_in_commit_order(database_url: str) -> None:
    """Watchers read order summaries by change_seq: a batch stamped earlier but committed later
    would be passed over. So a second projector's batch waits for the first to commit."""
    url = libpq_url(database_url)
    first_id, second_id = new_id("o"), new_id("o")
    held, release = threading.Event(), threading.Event()

    def apply(order_id: str, stream_seq: int, hold: bool) -> None:
        async def go() -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                placed = envelope(order_id, 1, customer_id=new_id("c"))
                placed.order_placed.lines[0].product_id = new_id("p")  # no row in common with the other
                item = Incoming(stream_seq, f"orders.events.default.order.0.{order_id}", placed.SerializeToString())

                def before_commit() -> None:
                    if hold:  # stamped, not yet committed
                        held.set()
                        release.wait(60)

                await apply_batch(conn, [item], MODELS, fault_check(frozenset()), checkpoints=None,
                                  max_gap_deliveries=3, before_commit=before_commit)

        asyncio.run(go())

    first = threading.Thread(target=apply, args=(first_id, 10**9, True))
    second = threading.Thread(target=apply, args=(second_id, 10**9 + 1, False))
    first.start()
    try:
        assert held.wait(30)
        second.start()
        with psycopg.connect(url, autocommit=True) as db:
            wait_until(lambda: not second.is_alive() or scalar(
                db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") > 0,
                what="the second batch to wait or to finish")
            assert second.is_alive(), "the second batch committed while the first, stamped before it, was open"
    finally:
        release.set()
        first.join(60)
        second.join(60)
    with psycopg.connect(url, autocommit=True) as db:
        stamps: dict[str, int] = dict(db.execute(
            "SELECT order_id, change_seq FROM order_summaries WHERE order_id = ANY(%s)",
            ([first_id, second_id],)).fetchall())
    assert stamps[first_id] < stamps[second_id]

