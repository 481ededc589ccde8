"""The clients of a chaos run, on an event loop of their own thread (the main thread supervises
and strikes): the workers, a WatchOrders watcher, and a sampler of the read model."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from typing import Any

import grpc
import psycopg

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_pb_grpc
from orders.v1 import types_pb2
from server.config import libpq_url
from server.devstack.supervisor import LocalStack
from tests.chaos.history import History
from tests.chaos.workload import Worker

TENANT = "chaos"


class Clients(threading.Thread):
    """The workers and the read-model sampler, on an event loop of their own thread: the main
    thread stays free to supervise and strike."""

    def __init__(self, stack: LocalStack, history: History, rng: random.Random, workers: int) -> None:
        super().__init__(name="chaos-clients", daemon=True)
        self.stack, self.history, self.workers = stack, history, workers
        self.rng = random.Random(rng.random())
        self.ready, self.load_over, self.load_done, self.settled = (threading.Event() for _ in range(4))
        self.regressions: list[str] = []
        self.watcher = Watcher(self.regressions)
        self.timeline: list[tuple[float, int, int]] = []  # (time, outbox depth, projector lag)
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by finish()
            self.failure = exc
            self.ready.set()
            self.load_done.set()

    def finish(self) -> None:
        self.load_over.set()
        self.settled.set()
        self.join(60)
        if self.failure is not None:
            raise self.failure

    async def _main(self) -> None:
        assert self.stack.issuer is not None
        metadata = (("authorization", f"Bearer {self.stack.issuer.mint(TENANT, subject='chaos')}"),)
        async with grpc.aio.insecure_channel(self.stack.settings.command_addr) as channel, \
                grpc.aio.insecure_channel(self.stack.settings.query_addr) as query_channel:
            stub = pb_grpc.CommandServiceStub(channel)
            customer_id = f"c-{uuid.uuid4().hex[:8]}"
            await stub.RegisterCustomer(pb.RegisterCustomerRequest(
                request_id=str(uuid.uuid4()), customer_id=customer_id, display_name="Chaos",
                email="chaos@example.com", credit_limit=types_pb2.Money(currency_code="EUR", units=10**12)),
                metadata=metadata, timeout=30)
            stop = asyncio.Event()
            workers = [Worker(n, stub, metadata, customer_id, self.history, random.Random(self.rng.random()))
                       for n in range(self.workers)]
            tasks = [asyncio.create_task(w.run(stop)) for w in workers]
            sampler = asyncio.create_task(sample(libpq_url(self.stack.database_url), self.regressions,
                                                  self.timeline))
            watcher = asyncio.create_task(self.watcher.run(query_pb_grpc.QueryServiceStub(query_channel), metadata,
                                                           customer_id))
            self.ready.set()
            await _until(self.load_over)
            stop.set()
            await asyncio.gather(*tasks)
            self.load_done.set()
            await _until(self.settled)
            for task in (sampler, watcher):
                task.cancel()
            await asyncio.gather(sampler, watcher, return_exceptions=True)


class Watcher:
    """A dashboard's WatchOrders stream of the clients' customer, resumed with its last token
    after every break (a query server killed, a deadline): G7 per subscriber, each order's
    versions never going down, and at the end each order's last version the write side's."""

    def __init__(self, regressions: list[str]) -> None:
        self.regressions = regressions
        self.versions: dict[str, int] = {}
        self.resumes = 0

    async def run(self, stub: query_pb_grpc.QueryServiceStub, metadata: Any, customer_id: str) -> None:
        token = ""
        while True:
            try:
                stream = stub.WatchOrders(query_pb.WatchOrdersRequest(customer_id=customer_id, resume_token=token),
                                          metadata=metadata)
                async for message in stream:
                    if message.HasField("heartbeat"):
                        token = message.heartbeat.resume_token or token
                        continue
                    summary = message.update.summary
                    seen = self.versions.get(summary.order_id, 0)
                    if summary.version < seen:
                        self.regressions.append(f"{summary.order_id}: a watcher got version {summary.version} "
                                                f"after {seen}")
                    self.versions[summary.order_id] = max(seen, summary.version)
                    token = message.update.resume_token or token
            except grpc.aio.AioRpcError:
                pass  # a query server killed or shutting down: resume where it stopped
            self.resumes += 1
            await asyncio.sleep(0.5)


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.1)


async def sample(db_url: str, regressions: list[str], timeline: list[tuple[float, int, int]]) -> None:
    """G7: the read model's most recently changed orders every 100 ms; a version lower than one
    seen before is a regression. Every second, for the soak's plot: the outbox's depth and the
    projector's lag (stream sequences published but not yet applied)."""
    highest: dict[str, int] = {}
    next_point = 0.0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                while True:
                    cur = await conn.execute("SELECT order_id, version FROM order_summaries WHERE tenant_id = %s "
                                             "ORDER BY change_seq DESC LIMIT 500", (TENANT,))
                    for order_id, version in await cur.fetchall():
                        if version < highest.get(order_id, 0):
                            regressions.append(f"{order_id}: read model went from version {highest[order_id]} "
                                               f"to {version}")
                        highest[order_id] = max(version, highest.get(order_id, 0))
                    if time.monotonic() >= next_point:
                        next_point = time.monotonic() + 1.0
                        cur = await conn.execute(_PIPELINE)
                        depth, lag = await cur.fetchone() or (0, 0)
                        # A checkpoint may pass the newest row's sequence (a republished event): no lag.
                        timeline.append((time.time(), int(depth), max(0, int(lag or 0))))
                    await asyncio.sleep(0.1)
        except psycopg.OperationalError:  # PostgreSQL is down: a fault, not a finding
            await asyncio.sleep(0.5)


# The outbox's depth, and how far the projector's checkpoint is behind the last published event.
_PIPELINE = """SELECT (SELECT count(*) FROM events WHERE published_at IS NULL),
    (SELECT stream_seq FROM events WHERE stream_seq IS NOT NULL ORDER BY id DESC LIMIT 1)
    - (SELECT coalesce(max(stream_seq), 0) FROM projection_checkpoints)"""
