"""One chaos run: a fresh stack (embedded PostgreSQL and NATS, the four roles under the stack's
supervisor), workers recording a history, the nemesis striking on a seeded schedule, then heal,
settle and check. `python -m tests.chaos --help`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import nats
import psycopg

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import events_pb2, types_pb2
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_pb_grpc
from server.command.service import POOL_MAX_SIZE as COMMAND_POOL_SIZE
from server.config import Settings, libpq_url
from server.devstack.supervisor import LocalStack
from server.platform import privileges
from server.platform.process import free_port
from tests.chaos import checker
from tests.chaos.history import INVOKE, NEMESIS, History, Op, around, describe
from tests.chaos.nemesis import ROLES, Heal, Nemesis
from tests.chaos.workload import CALL_TIMEOUT, RETRIES, Worker, total_text

TENANT = "chaos"
FAULTS = ("kill", "pause", "terminate-backends", "kill-nats", "kill-postgres")
SABOTAGE = Path(__file__).parent / "sabotage"
WARMUP_SECONDS = 5.0
HEALTHY_WITHIN_SECONDS = 15.0
WATCHER_CATCH_UP_SECONDS = 20.0
# G8's bounds on what the roles hold after the run, against what they held under load before
# the first fault: descriptors and database connections back within 10%, with a little slack.
GROWTH, SLACK_FDS, SLACK_CONNECTIONS = 1.10, 8, 4


@dataclass
class Outcome:
    seen: checker.Observed
    convergence: float | None  # seconds from the heal until the read model equals the write side
    peaks: dict[str, int]  # the most descriptors of each role and database connections seen
    timeline: list[tuple[float, int, int]]  # (time, outbox depth, projector lag), every second
    watched: tuple[int, int]  # orders the watcher followed, and how often its stream was resumed


@dataclass
class Options:
    seed: int = 1
    seconds: float = 60.0
    interval: float = 8.0
    workers: int = 6
    projectors: int = 2
    faults: tuple[str, ...] = FAULTS
    settle: float = 60.0
    out: Path = Path("chaos-results")
    sabotage: str = ""
    plot: bool = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="the fault schedule's and the workload's seed")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (faults strike during it)")
    parser.add_argument("--interval", type=float, default=8.0, help="mean seconds between faults")
    parser.add_argument("--workers", type=int, default=6, help="concurrent clients")
    parser.add_argument("--projectors", type=int, default=2, help="projector processes sharing the partitions")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds the system has to converge after the last fault")
    parser.add_argument("--out", type=Path, default=Path("chaos-results"), help="where the history and report go")
    parser.add_argument("--plot", action="store_true", help="also draw throughput, lag and faults over time")
    parser.add_argument("--sabotage", choices=["", "mark-before-ack"], default="",
                        help="break a guarantee on purpose, to see the checker catch it")
    args = parser.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
    report = run(Options(seed=args.seed, seconds=args.seconds, interval=args.interval, workers=args.workers,
                         projectors=args.projectors, faults=faults, settle=args.settle, out=args.out,
                         sabotage=args.sabotage, plot=args.plot))
    return 0 if report.valid else 1


def run(options: Options, say: Any = print) -> checker.Report:
    options.out.mkdir(parents=True, exist_ok=True)
    history = History(options.out / "history.jsonl")
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="orders-chaos-") as data, _sabotaged(options.sabotage):
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and k != "NATS_URL"}
        settings = replace(Settings.from_env(env), data_dir=Path(data), metrics_base_port=0, projectors=options.projectors,
                           command_addr=f"127.0.0.1:{free_port()}", query_addr=f"127.0.0.1:{free_port()}")
        say(f"chaos: seed {options.seed}, {options.seconds:.0f}s of load, {options.projectors} projectors, "
            f"a fault every ~{options.interval:.0f}s "
            f"({', '.join(options.faults)}){', SABOTAGED: ' + options.sabotage if options.sabotage else ''}")
        with LocalStack(settings, roles=ROLES) as stack:
            _await(stack, stack.serving, 60, "the stack to serve")
            clients = Clients(stack, history, rng, options)
            clients.start()
            try:
                outcome = _drive(stack, clients, history, rng, options, say)
            finally:
                clients.finish()
    history.close()
    report = checker.check(history.ops, outcome.seen)
    say(report.summary())
    convergence = outcome.convergence
    say(f"convergence after the last fault: {convergence:.1f}s" if convergence is not None
        else f"did not converge within {options.settle:.0f}s of the last fault")
    _explain(report, history.ops, say)
    recovery = longest_recovery(history.ops, outcome.timeline)
    figures = {
        "seed": options.seed, "seconds": options.seconds, "valid": report.valid,
        "operations": sum(report.counts.values()), "counts": report.counts, "faults": report.faults,
        "lost": len(report.violations.get("G1", [])), "duplicated": len(report.violations.get("G3", [])),
        "regressed": len(report.violations.get("G7", [])), "convergence_seconds": convergence,
        "longest_recovery_seconds": recovery, "peaks": outcome.peaks,
        "watched_orders": outcome.watched[0], "watch_resumes": outcome.watched[1],
        "violations": {k: v for k, v in report.violations.items() if v}}
    (options.out / "report.json").write_text(json.dumps(figures, indent=2))
    (options.out / "timeline.jsonl").write_text("".join(json.dumps(p) + "\n" for p in outcome.timeline))
    recovered = "none measured" if recovery is None else f"{recovery:.1f}s"
    say(f"peaks: {', '.join(f'{k} {v}' for k, v in sorted(outcome.peaks.items()))}; "
        f"longest recovery from a fault: {recovered}; the watcher followed {outcome.watched[0]} orders, "
        f"resuming {outcome.watched[1]} times")
    if options.plot:
        from tests.chaos.plot import draw

        say(f"plot: {draw(history.ops, outcome.timeline, options.out / 'chaos.png')}")
    say(f"history: {options.out / 'history.jsonl'}  report: {options.out / 'report.json'}")
    return report


# A fault is over, for the soak's figures, once the outbox and the projector are no further
# behind than this again (under load neither is ever exactly empty).
CAUGHT_UP_EVENTS = 50


def longest_recovery(ops: list[Op], timeline: list[tuple[float, int, int]]) -> float | None:
    """The longest time from a fault until the outbox's depth and the projector's lag were both
    back under CAUGHT_UP_EVENTS (after the fault's own duration, e.g. an outage)."""
    longest = None
    for fault in (op for op in ops if op.type == NEMESIS and op.f != "heal"):
        after = [t for t, depth, lag in timeline if t > fault.time + 1 and depth <= CAUGHT_UP_EVENTS
                 and lag <= CAUGHT_UP_EVENTS]
        if after:
            longest = max(longest or 0.0, after[0] - fault.time)
    return longest


@contextlib.contextmanager
def _sabotaged(kind: str) -> Iterator[None]:
    """The roles of the stack started inside see ORDERS_CHAOS_SABOTAGE and a sitecustomize that
    acts on it (tests/chaos/sabotage): the product's code has no switch to break itself."""
    if not kind:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "ORDERS_CHAOS_SABOTAGE")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SABOTAGE), saved["PYTHONPATH"]) if p)
    os.environ["ORDERS_CHAOS_SABOTAGE"] = kind
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _await(stack: LocalStack, condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Supervises the stack (restarting a role that died, as `orders up` does) until `condition`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise TimeoutError(f"waited {seconds:.0f}s for {what}")
        stack.supervise()
        time.sleep(0.2)
    return time.monotonic() - start


def _drive(stack: LocalStack, clients: Clients, history: History, rng: random.Random, options: Options,
           say: Any) -> Outcome:
    """The main thread's part: supervision, the faults, the heal, the wait for convergence."""
    _await(stack, clients.ready.is_set, 30, "the clients")
    started = time.monotonic()
    _await(stack, lambda: time.monotonic() - started > WARMUP_SECONDS, WARMUP_SECONDS + 5, "the warm-up")
    baseline = peaks = _resources(stack)
    counted_at = time.monotonic()
    nemesis = Nemesis(stack, history, random.Random(rng.random()), options.faults)
    heals: list[tuple[float, Heal]] = []
    strike_at = time.monotonic() + options.interval * nemesis.rng.uniform(0.7, 1.3)
    while time.monotonic() - started < options.seconds:
        stack.supervise()
        now = time.monotonic()
        for due, heal in [h for h in heals if h[0] <= now]:
            heals.remove((due, heal))
            heal()
        if now >= strike_at:
            lasting = nemesis.strike()
            if lasting is not None:
                heals.append((now + lasting[0], lasting[1]))
            strike_at = now + options.interval * nemesis.rng.uniform(0.7, 1.3)
        if now - counted_at > 5:
            counted_at = now
            peaks = {k: max(v, peaks.get(k, 0)) for k, v in _resources(stack).items()}
        time.sleep(0.1)
    for _, heal in heals:
        heal()
    history.add(Op(NEMESIS, "heal", detail="every fault is over"))
    healed = time.monotonic()
    clients.load_over.set()
    _await(stack, clients.load_done.is_set, 2 * CALL_TIMEOUT * (RETRIES + 1), "the clients to finish")
    say(f"chaos: load over ({sum(1 for o in history.ops if o.type not in (INVOKE, NEMESIS))} answers); settling ...")
    resources = []
    try:
        _await(stack, stack.serving, HEALTHY_WITHIN_SECONDS, "health")
    except TimeoutError:
        resources.append(f"not every server SERVING within {HEALTHY_WITHIN_SECONDS:.0f}s of the heal")
    db_url = libpq_url(stack.database_url)
    convergence = None
    with contextlib.suppress(TimeoutError):
        _await(stack, lambda: _converged(db_url), options.settle - (time.monotonic() - healed), "convergence")
        convergence = time.monotonic() - healed
    after = _resources(stack)
    pools = {privileges.ROLE_OF_PROCESS["command-server"]: COMMAND_POOL_SIZE,
             privileges.ROLE_OF_PROCESS["query-server"]: stack.settings.query_pool_size}
    resources += _bounded(baseline, after, pools)
    lagging = _watcher_behind(stack, db_url, clients.watcher)
    clients.settled.set()
    assert stack.nats is not None
    seen = _observe(db_url, stack.nats.url, stack.settings.stream_name)
    seen.regressions, seen.resources = clients.regressions + lagging, resources
    return Outcome(seen, convergence, {k: max(v, peaks.get(k, 0)) for k, v in after.items()}, clients.timeline,
                   (len(clients.watcher.versions), clients.watcher.resumes))


def _watcher_behind(stack: LocalStack, db_url: str, watcher: Watcher) -> list[str]:
    """The orders whose last version the watcher has not got, WATCHER_CATCH_UP_SECONDS after
    the system converged (a stream that missed a change stays behind for good)."""
    def behind() -> list[str]:
        with psycopg.connect(db_url, autocommit=True) as conn:
            rows = conn.execute("SELECT order_id, version FROM orders WHERE tenant_id = %s", (TENANT,)).fetchall()
        return [f"{order_id}: the watcher's last version is {watcher.versions.get(order_id, 0)}, the order's {version}"
                for order_id, version in rows if watcher.versions.get(order_id, 0) != version]

    with contextlib.suppress(TimeoutError):
        _await(stack, lambda: not behind(), WATCHER_CATCH_UP_SECONDS, "the watcher")
    return behind()


class Clients(threading.Thread):
    """The workers and the read-model sampler, on an event loop of their own thread: the main
    thread stays free to supervise and strike."""

    def __init__(self, stack: LocalStack, history: History, rng: random.Random, options: Options) -> None:
        super().__init__(name="chaos-clients", daemon=True)
        self.stack, self.history, self.options = stack, history, options
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
                       for n in range(self.options.workers)]
            tasks = [asyncio.create_task(w.run(stop)) for w in workers]
            sampler = asyncio.create_task(_sample(libpq_url(self.stack.database_url), self.regressions,
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


async def _sample(db_url: str, regressions: list[str], timeline: list[tuple[float, int, int]]) -> None:
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


def _converged(db_url: str) -> bool:
    """Every event published and every order's read model at its write-side version."""
    try:
        with psycopg.connect(db_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM events WHERE tenant_id = %(t)s AND published_at IS NULL), "
                "(SELECT count(*) FROM orders o LEFT JOIN order_summaries s USING (tenant_id, order_id) "
                " WHERE o.tenant_id = %(t)s AND s.version IS DISTINCT FROM o.version)", {"t": TENANT}).fetchone()
    except psycopg.OperationalError:
        return False
    return row is not None and row == (0, 0)


def _observe(db_url: str, nats_url: str, stream: str) -> checker.Observed:
    with psycopg.connect(db_url, autocommit=True) as conn:
        orders = {order_id: checker.Row(version, state, total_text(total)) for order_id, version, state, total in
                  conn.execute("SELECT order_id, version, state, total FROM orders WHERE tenant_id = %s", (TENANT,))}
        read_model = {order_id: checker.Row(version, state, total_text(total)) for order_id, version, state, total in
                      conn.execute("SELECT order_id, version, state, total FROM order_summaries WHERE tenant_id = %s",
                                   (TENANT,))}
        events: dict[str, list[checker.Event]] = defaultdict(list)
        for order_id, version, payload, published in conn.execute(
                "SELECT aggregate_id, aggregate_version, payload, published_at IS NOT NULL FROM events "
                "WHERE tenant_id = %s AND aggregate_type = 'order' ORDER BY aggregate_id, aggregate_version", (TENANT,)):
            envelope = events_pb2.Envelope.FromString(payload)
            events[order_id].append(checker.Event(version, envelope.request_id, published))
        responses = {request_id: bytes(response or b"") for request_id, response in
                     conn.execute("SELECT request_id, response FROM idempotency WHERE tenant_id = %s", (TENANT,))}
    return checker.Observed(orders, dict(events), responses, asyncio.run(_stream(nats_url, stream)), read_model)


async def _stream(nats_url: str, stream: str) -> dict[str, list[int]]:
    """Each order's versions in the stream, in stream-sequence order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        versions: dict[str, list[int]] = defaultdict(list)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            envelope = events_pb2.Envelope.FromString(msg.data or b"")
            if envelope.tenant_id == TENANT and envelope.aggregate_type == "order":
                versions[envelope.aggregate_id].append(envelope.aggregate_version)
        return dict(versions)
    finally:
        await nc.close()


def _resources(stack: LocalStack) -> dict[str, int]:
    """Open descriptors of each role's processes, and the database's connections."""
    found: dict[str, int] = defaultdict(int)
    for child in stack.children:
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(OSError):
                found[f"fds {child.role}"] += len(os.listdir(f"/proc/{child.proc.pid}/fd"))
    with contextlib.suppress(psycopg.OperationalError):  # the database may be down: a fault's doing
        with psycopg.connect(libpq_url(stack.database_url), autocommit=True, connect_timeout=5) as conn:
            for user, count in conn.execute("SELECT usename, count(*) FROM pg_stat_activity "
                                            "WHERE backend_type = 'client backend' GROUP BY usename"):
                found[f"connections {user}"] = int(count)
    return dict(found)


def _bounded(before: dict[str, int], after: dict[str, int], pools: dict[str, int]) -> list[str]:
    """G8: what each role holds after the run against what it held under load before the first
    fault. A connection pool that grew under the faults shrinks only after minutes idle, so a
    role's connections may reach its pool's size (`pools`, by database user), and its descriptors
    may grow by those connections' sockets; anything beyond is a leak."""
    findings = []
    for name, value in after.items():
        if name.startswith("connections "):
            limit = max(int(before.get(name, 0) * GROWTH) + SLACK_CONNECTIONS, pools.get(name.split()[1], 0))
        else:
            user = privileges.ROLE_OF_PROCESS[name.split()[1]]
            grown = max(0, after.get(f"connections {user}", 0) - before.get(f"connections {user}", 0))
            limit = int(before.get(name, 0) * GROWTH) + SLACK_FDS + grown
        if value > limit:
            findings.append(f"{name}: {value} after the run, {before.get(name, 0)} under load before it (limit {limit})")
    return findings


def _explain(report: checker.Report, ops: list[Op], say: Any) -> None:
    """For each broken invariant, its first finding and the history of the order it is about,
    with the faults around it: the smallest slice that shows the violation."""
    for invariant, findings in sorted(report.violations.items()):
        order_id = findings[0].partition(":")[0] if invariant in report.orders_of else ""
        say(f"\n{invariant}: {findings[0]}")
        if order_id:
            say(f"the history of {order_id}, with the faults around it:")
            for op in around(ops, order_id):
                say("  " + describe(op))
