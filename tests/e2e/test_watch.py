"""WatchOrders against the real servers: grpcurl, resume after kill -9 and after a graceful
stop, and a client that never reads."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import psutil
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2
from server.platform.process import free_port
from tests.e2e.client import (
    ErrorInfo,
    aio_channel,
    commands,
    detail,
    eur,
    new_id,
    place_request,
    queries,
    register,
    status_of,
)
from tests.harness import GRPCURL, ROOT, Stack, sample, scrape, serving, token, wait_until

pytestmark = pytest.mark.e2e


def json_objects(text: str) -> list[dict[str, object]]:
    """grpcurl prints one (pretty) JSON object per streamed message."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        try:
            obj, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            break  # the last object is still being written
        found.append(obj)
    return found


def token_of(message: query_pb.WatchOrdersResponse) -> str:
    return message.update.resume_token if message.HasField("update") else message.heartbeat.resume_token


def restart_query_server(stack: Stack) -> None:
    stack.start("query-server")
    wait_until(lambda: stack.alive() and serving(stack.query_addr), what="query-server SERVING again")


def test_grpcurl_watch_on_a_customer_prints_placed_confirmed_and_shipped(stack: Stack, tmp_path: Path) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    register(cmd, customer_id)
    out = tmp_path / "watch.json"
    with out.open("w") as sink:
        watch = subprocess.Popen(
            [GRPCURL, "-plaintext", "-max-time", "120", "-rpc-header", f"authorization: Bearer {token()}",
             "-d", json.dumps({"customer_id": customer_id}),
             stack.query_addr, "orders.v1.QueryService/WatchOrders"], stdout=sink, stderr=subprocess.STDOUT)
    try:
        def updates() -> list[dict[str, object]]:
            assert watch.poll() is None, out.read_text()
            return [o["update"] for o in json_objects(out.read_text()) if "update" in o]  # type: ignore[misc]

        # The first heartbeat shows the stream is open before anything happens.
        wait_until(lambda: any("heartbeat" in o for o in json_objects(out.read_text())), what="a heartbeat")
        cmd.PlaceOrder(place_request(order_id, customer_id), timeout=10)
        wait_until(lambda: len(updates()) == 1, what="the placed update")
        cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=1), timeout=10)
        wait_until(lambda: len(updates()) == 2, what="the confirmed update")
        cmd.ShipOrder(pb.ShipOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=2), timeout=10)
        got = wait_until(lambda: seen if len(seen := updates()) == 3 else None, what="the shipped update")
    finally:
        watch.kill()
        watch.wait()

    assert [(u["summary"]["version"], u["summary"]["state"]) for u in got] == [  # type: ignore[index]
        ("1", "ORDER_STATE_PLACED"), ("2", "ORDER_STATE_CONFIRMED"), ("3", "ORDER_STATE_SHIPPED")]
    assert all(u["resume_token"] for u in got)


# --- resume under faults ---------------------------------------------------------------------


class Watch:
    """A client that resumes with its last token whenever the stream breaks."""

    def __init__(self, addr: str, customer_id: str) -> None:
        self.addr, self.customer_id = addr, customer_id
        self.token = ""
        self.versions: dict[str, list[int]] = {}
        self.broken: list[grpc.StatusCode] = []
        self.changed = asyncio.Event()

    def latest(self) -> dict[str, int]:
        return {order_id: seen[-1] for order_id, seen in self.versions.items()}

    async def run(self) -> None:
        async with aio_channel(self.addr) as channel:
            stub = query_grpc.QueryServiceStub(channel)
            while True:
                call = stub.WatchOrders(query_pb.WatchOrdersRequest(customer_id=self.customer_id, resume_token=self.token),
                                        wait_for_ready=True)
                try:
                    async for message in call:
                        if message.HasField("update"):
                            summary = message.update.summary
                            self.versions.setdefault(summary.order_id, []).append(summary.version)
                            self.token = message.update.resume_token
                            self.changed.set()
                        else:
                            self.token = message.heartbeat.resume_token
                except grpc.aio.AioRpcError as exc:
                    self.broken.append(exc.code())


async def _drive(cmd: pb_grpc.CommandServiceStub, customer_id: str, orders: int) -> None:
    for _ in range(orders):
        placed = await cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
        confirmed = await cmd.ConfirmOrder(pb.ConfirmOrderRequest(
            request_id=new_id("r"), order_id=placed.order_id, expected_version=placed.version), timeout=10)
        await cmd.ShipOrder(pb.ShipOrderRequest(
            request_id=new_id("r"), order_id=placed.order_id, expected_version=confirmed.version), timeout=10)


def _final_versions(db: object, customer_id: str) -> dict[str, int]:
    rows = db.execute("SELECT order_id, version FROM orders WHERE customer_id = %s", (customer_id,)).fetchall()  # type: ignore[attr-defined]
    return dict(rows)


def test_twenty_watchers_resume_after_kill_9_with_every_final_version_and_no_regression(stack: Stack, db: object) -> None:
    _, sync_cmd = commands(stack.command_addr)
    customers = [new_id("c") for _ in range(20)]
    for customer_id in customers:
        register(sync_cmd, customer_id)

    async def scenario() -> list[Watch]:
        watches = [Watch(stack.query_addr, c) for c in customers]
        tasks = [asyncio.create_task(w.run()) for w in watches]
        async with aio_channel(stack.command_addr) as channel:
            cmd = pb_grpc.CommandServiceStub(channel)
            load = asyncio.gather(*(_drive(cmd, c, 4) for c in customers))
            # Kill the query server once every watcher has seen something, while load goes on.
            await asyncio.wait_for(asyncio.gather(*(w.changed.wait() for w in watches)), 60)
            stack.kill("query-server")
            # Started from the main thread: the child dies with the thread that spawned it.
            stack.start("query-server")
            await load
        finals = {c: _final_versions(db, c) for c in customers}

        async def caught_up(watch: Watch) -> None:
            while watch.latest() != finals[watch.customer_id]:
                watch.changed.clear()
                await watch.changed.wait()

        await asyncio.wait_for(asyncio.gather(*(caught_up(w) for w in watches)), 60)
        for task in tasks:
            task.cancel()
        return watches

    watches = asyncio.run(scenario())

    assert all(w.broken for w in watches), "every stream was cut by the kill"
    for watch in watches:
        assert len(watch.versions) == 4
        for seen in watch.versions.values():
            assert seen == sorted(set(seen)), f"versions not strictly increasing: {seen}"
            assert seen[-1] == 3


def test_sigterm_ends_watch_streams_with_shutting_down_and_the_token_resumes(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    first = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    _, query = queries(stack.query_addr)
    stream = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id), timeout=60, wait_for_ready=True)
    token = next(m for m in stream if m.HasField("update")).update.resume_token

    stack.kill("query-server", signal.SIGTERM)
    exit_code = stack.procs["query-server"].returncode
    with pytest.raises(grpc.RpcError) as raised:
        for message in stream:
            token = token_of(message)
    info = detail(status_of(raised.value), ErrorInfo)
    second = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    restart_query_server(stack)
    resumed = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id, resume_token=token), timeout=60,
                                wait_for_ready=True)
    after = next(m for m in resumed if m.HasField("update")).update.summary

    assert exit_code == 0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.reason == "SHUTTING_DOWN"
    assert info.metadata["resume_token"] == token
    assert (after.order_id, after.version) == (second.order_id, 1), f"resumed after {first.order_id}, no repeat"
    resumed.cancel()


def test_a_watcher_that_never_reads_stays_bounded_and_does_not_hold_back_the_others(stack: Stack) -> None:
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    tenant = (("x-tenant-id", "slow"),)
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                    display_name="Slow", email="s@example.com"), metadata=tenant)
    # A stream that is opened and never read: its flow-control window fills, then the server waits.
    never_read = query.WatchOrders(query_pb.WatchOrdersRequest(), metadata=tenant, timeout=300, wait_for_ready=True)
    server = psutil.Process(stack.procs["query-server"].pid)
    lines = [types_pb2.OrderLine(product_id=f"p-{i}", quantity=1 + i, unit_price=eur(1 + i)) for i in range(40)]
    placed = [cmd.PlaceOrder(place_request(new_id("o"), customer_id, *lines), timeout=10, metadata=tenant)
              for _ in range(10)]
    rss_before = server.memory_info().rss

    for _ in range(401):  # ~1.5 MB of updates the slow stream cannot take in
        placed.append(cmd.PlaceOrder(place_request(new_id("o"), customer_id, *lines), timeout=10, metadata=tenant))
    last = placed[-1]
    # Orders of different partitions may be applied in any order: read until every one came.
    wanted, seen = {p.order_id for p in placed}, set()
    reader = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id), metadata=tenant, timeout=120)
    received = 0
    for message in reader:
        if message.HasField("update"):
            received += 1
            seen.add(message.update.summary.order_id)
            if seen >= wanted:
                break
    got = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=last.order_id), timeout=5, metadata=tenant)

    assert received == len(wanted) == 411  # each once
    assert got.summary.version == 1
    growth_mb = (server.memory_info().rss - rss_before) / 2**20
    assert growth_mb < 40, f"query-server grew {growth_mb:.1f} MB"
    never_read.cancel()
    reader.cancel()


def test_a_change_applied_late_behind_newer_ones_still_reaches_a_watcher_past_them(stack: Stack, db: object) -> None:
    """After a projector crash, JetStream redelivers unacked events behind newer ones, so a row can
    change with a lower stream sequence than rows already delivered. No notice is sent here
    either: the watcher's periodic re-check must find it."""
    _, cmd = commands(stack.command_addr)
    _, query = queries(stack.query_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    early = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    stream = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id), timeout=60, wait_for_ready=True)
    updates = (m.update.summary for m in stream if m.HasField("update"))
    assert next(updates).order_id == early.order_id
    later = cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    assert next(updates).order_id == later.order_id

    db.execute(  # type: ignore[attr-defined]
        "UPDATE order_summaries SET state = 'CONFIRMED', version = 2, stream_seq = 1 WHERE order_id = %s",
        (early.order_id,))
    late = next(updates)

    assert (late.order_id, late.version, late.state) == (early.order_id, 2, types_pb2.ORDER_STATE_CONFIRMED)
    stream.cancel()


# A client with `n` WatchOrders streams on one tenant's orders; it prints a line on its first update.
_MANY_WATCHERS = """
import asyncio, sys, grpc
from orders.v1 import query_service_pb2 as pb, query_service_pb2_grpc as pb_grpc

async def main(addr, n, token):
    channels = [grpc.aio.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n // 100 + 1)]
    async def watch(i):
        stub = pb_grpc.QueryServiceStub(channels[i // 100])
        async for message in stub.WatchOrders(pb.WatchOrdersRequest(), metadata=(("authorization", "Bearer " + token),)):
            if i == 0 and message.HasField("update"):
                print("updating", flush=True)
    await asyncio.gather(*(watch(i) for i in range(n)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def test_streams_of_a_client_killed_mid_update_end_cleanly(stack: Stack) -> None:
    """A client with 200 streams dies while updates flow. gRPC leaves a stream cancelled mid-send
    for the event loop to close later, in another task: every stream still ends, and no
    OpenTelemetry context is left that cannot be detached (logged as "Failed to detach context",
    once per stream, before the streams were closed in their own task)."""
    addr, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    stack.start("query-server", name="query-watched", QUERY_ADDR=addr, METRICS_ADDR=metrics)
    wait_until(lambda: stack.alive() and serving(addr), what="the second query-server SERVING")
    _, cmd = commands(stack.command_addr)
    tenant = (("x-tenant-id", "vanishing"),)
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id,
                                                    display_name="Gone", email="g@example.com"), metadata=tenant)
    client = subprocess.Popen([sys.executable, "-c", _MANY_WATCHERS, addr, "200", token("vanishing")], cwd=ROOT, stdout=subprocess.PIPE)
    wait_until(lambda: sample(scrape(metrics), "orders_watchers_active") == 200, what="200 streams open")
    placing = threading.Event()

    def place_orders() -> None:
        while not placing.is_set():
            cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10, metadata=tenant)

    placer = threading.Thread(target=place_orders)
    placer.start()
    try:
        assert client.stdout is not None and client.stdout.readline() == b"updating\n"
        client.kill()
        client.wait()
        wait_until(lambda: sample(scrape(metrics), "orders_watchers_active") == 0, what="every stream ended")
    finally:
        placing.set()
        placer.join()
    log = stack.log("query-watched")
    assert "Failed to detach context" not in log
    assert '"level": "error"' not in log
