"""Reads from a PostgreSQL streaming replica (QUERY_DATABASE_URL): consistency tokens still give
read-your-writes, and WatchOrders still sees every order's changes in order, with the replica
replaying each commit 50 ms late, so that every read and every notice is ahead of it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import query_service_pb2 as query_pb
from server.devstack.embedded import EmbeddedPostgres, EmbeddedReplica
from server.platform.migrations import upgrade
from tests.e2e.client import commands, new_id, place_request, queries, register
from tests.harness import Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e
PAIRS = 1000
CLIENTS = 16
APPLY_DELAY = "50ms"  # the replica replays each commit this late: reads are ahead of it


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[tuple[Stack, str, str]]:
    """A primary and its replica of their own, the roles on the primary and the query server on
    the replica, logging in as its own role (replicated from the primary): the stack, and the
    owner's URLs on the primary and on the replica."""
    data = tmp_path_factory.mktemp("replicated")
    primary = EmbeddedPostgres(data)
    primary.start()
    replica = EmbeddedReplica(data, primary)
    stack: Stack | None = None
    try:
        upgrade(primary.url)
        stack = Stack(primary.url, nats_url, tmp_path_factory.mktemp("logs"))
        primary_login = stack.role_env("query-server")["QUERY_DATABASE_URL"]  # made on the primary
        replica.start()
        on_replica = primary_login.replace(f":{primary.port}/", f":{replica.port}/")
        replica_owner = primary.url.replace(f":{primary.port}/", f":{replica.port}/")
        with psycopg.connect(replica_owner, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{APPLY_DELAY}'")
            conn.execute("SELECT pg_reload_conf()")
        wait_until(lambda: replica.replays(on_replica), what="the query server's login on the replica")
        for role in ("command-server", "relay", "projector"):
            stack.start(role)
        # A minute between heartbeats: a change the watcher's notice-driven read missed would
        # show only after the test's waits have given up.
        stack.start("query-server", QUERY_DATABASE_URL=on_replica, ORDERS_WATCH_HEARTBEAT_SECONDS="60")
        wait_until(lambda: stack is not None and stack.alive() and serving_both(stack), what="both servers SERVING")
        yield stack, primary.url, replica_owner
    finally:
        if stack is not None:
            stack.stop_all()
        replica.stop()
        primary.stop()


def serving_both(stack: Stack) -> bool:
    return serving(stack.command_addr) and serving(stack.query_addr)


def test_the_query_server_reads_only_the_replica_and_the_replica_lags(replicated: tuple[Stack, str, str]) -> None:
    _, primary_url, replica_url = replicated
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orders-query-server'"
    with psycopg.connect(primary_url) as primary, psycopg.connect(replica_url) as replica:
        assert scalar(replica, "SHOW recovery_min_apply_delay") == APPLY_DELAY
        assert scalar(replica, "SELECT pg_is_in_recovery()") is True
        assert scalar(replica, sql) >= 1
        assert scalar(primary, sql) == 0


def test_a_thousand_commands_each_read_back_with_its_token_through_the_replica_none_stale(
        replicated: tuple[Stack, str, str]) -> None:
    stack, _, _ = replicated
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)

    def read(order_id: str, token: str) -> tuple[int, int]:
        got = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=token),
                                    timeout=10)
        return got.summary.version, got.summary.state

    def lifecycle(n: int) -> list[tuple[int, int, int, int]]:
        """Up to three commands on one order, each followed by a read with its token: (version
        written, version read, state read, state expected) per pair."""
        pairs = []
        placed = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
        pairs.append((placed.version, *read(placed.order_id, placed.consistency_token), 1))
        if n % 3 >= 1:
            confirmed = cmd.ConfirmOrder(cmd_pb.ConfirmOrderRequest(
                request_id=new_id("r"), order_id=placed.order_id, expected_version=placed.version), timeout=10)
            pairs.append((confirmed.version, *read(placed.order_id, confirmed.consistency_token), 2))
            if n % 3 == 2:
                shipped = cmd.ShipOrder(cmd_pb.ShipOrderRequest(
                    request_id=new_id("r"), order_id=placed.order_id, expected_version=confirmed.version), timeout=10)
                pairs.append((shipped.version, *read(placed.order_id, shipped.consistency_token), 3))
        return pairs

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [pair for pairs in pool.map(lifecycle, range(PAIRS // 2 + 1)) for pair in pairs][:PAIRS]

    assert len(results) == PAIRS
    stale = [(written, read_) for written, read_, _, _ in results if read_ != written]
    assert stale == []
    assert all(state == expected for _, _, state, expected in results)  # PLACED, CONFIRMED, SHIPPED


def test_watch_orders_through_the_replica_sees_every_order_reach_its_last_version_in_order(
        replicated: tuple[Stack, str, str], tmp_path: Path) -> None:
    stack, _, _ = replicated
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    seen: dict[str, list[int]] = {}
    caught_up = threading.Event()
    stream = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id))

    def listen() -> None:
        with contextlib.suppress(grpc.RpcError):  # CANCELLED, when the test is done
            for message in stream:
                if message.HasField("update"):
                    seen.setdefault(message.update.summary.order_id, []).append(message.update.summary.version)
                else:
                    caught_up.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    finals: dict[str, int] = {}
    try:
        assert caught_up.wait(30)
        for _ in range(20):
            placed = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
            confirmed = cmd.ConfirmOrder(cmd_pb.ConfirmOrderRequest(
                request_id=new_id("r"), order_id=placed.order_id, expected_version=placed.version), timeout=10)
            finals[placed.order_id] = confirmed.version
        last = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
        finals[last.order_id] = last.version

        wait_until(lambda: all(seen.get(o, [0])[-1] == v for o, v in dict(finals).items()), timeout=30,
                   what="every order's last version on the stream")
    finally:
        stream.cancel()
        listener.join(timeout=10)

    assert set(seen) == set(finals)
    assert all(versions == sorted(set(versions)) for versions in seen.values())  # strictly increasing
