"""One chaos run: a fresh stack (embedded PostgreSQL and NATS, the four roles under the stack's
supervisor), workers recording a history, the nemesis striking on a seeded schedule, then heal,
settle and check. `python -m tests.chaos --help`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from server.command.service import POOL_MAX_SIZE as COMMAND_POOL_SIZE
from server.config import Settings, libpq_url
from server.devstack.supervisor import LocalStack
from server.platform import privileges
from server.platform.process import free_port
from tests.chaos import checker, observe
from tests.chaos.clients import TENANT, Clients, Watcher
from tests.chaos.history import INVOKE, NEMESIS, History, Op, around, describe
from tests.chaos.nemesis import ROLES, Heal, Nemesis
from tests.chaos.workload import CALL_TIMEOUT, RETRIES

FAULTS = ("kill", "pause", "terminate-backends", "kill-nats", "kill-postgres")
SABOTAGE = Path(__file__).parent / "sabotage"
WARMUP_SECONDS = 5.0
HEALTHY_WITHIN_SECONDS = 15.0
WATCHER_CATCH_UP_SECONDS = 20.0


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
            clients = Clients(stack, history, rng, options.workers)
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
    baseline = peaks = observe.resources(stack)
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
            peaks = {k: max(v, peaks.get(k, 0)) for k, v in observe.resources(stack).items()}
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
        _await(stack, lambda: observe.converged(db_url), options.settle - (time.monotonic() - healed), "convergence")
        convergence = time.monotonic() - healed
    after = observe.resources(stack)
    pools = {privileges.ROLE_OF_PROCESS["command-server"]: COMMAND_POOL_SIZE,
             privileges.ROLE_OF_PROCESS["query-server"]: stack.settings.query_pool_size}
    resources += observe.bounded(baseline, after, pools)
    lagging = _watcher_behind(stack, db_url, clients.watcher)
    clients.settled.set()
    assert stack.nats is not None
    seen = observe.system(db_url, stack.nats.url, stack.settings.stream_name)
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
