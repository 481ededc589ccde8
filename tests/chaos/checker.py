"""Judges a history against what the system holds after it settled: G1-G8 of the fault plan
(docs/chaos.md). Pure: the run gathers the state (`Observed`), this only compares."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tests.chaos.history import FAIL, INVOKE, OK, Op


@dataclass(frozen=True)
class Row:
    """An order as one place holds it."""

    version: int
    state: str
    total: str


@dataclass(frozen=True)
class Event:
    version: int
    causation_id: str  # the request id of the command that wrote it
    published: bool


@dataclass
class Observed:
    """The system's state once it settled."""

    orders: dict[str, Row]  # the write side's orders table
    events: dict[str, list[Event]]  # each order's events, in version order
    responses: dict[str, bytes]  # the idempotency table: request id -> stored response
    stream: dict[str, list[int]]  # each order's versions in the stream, in stream-sequence order
    read_model: dict[str, Row]  # the order summaries
    regressions: list[str] = field(default_factory=list)  # versions seen going down (sampler, watchers)
    resources: list[str] = field(default_factory=list)  # G8 findings: unhealthy, leaked descriptors


@dataclass
class Report:
    counts: Counter[str]
    faults: Counter[str]
    violations: dict[str, list[str]]  # invariant -> what broke it, one line each
    orders_of: dict[str, set[str]]  # invariant -> orders the violations are about

    @property
    def valid(self) -> bool:
        return not any(self.violations.values())

    def summary(self) -> str:
        lines = [f"operations: {sum(self.counts.values())} "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(self.counts.items()))})",
                 f"faults: {sum(self.faults.values())} "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items())) or 'none'})"]
        for invariant in INVARIANTS:
            found = self.violations.get(invariant, [])
            lines.append(f"{invariant} {NAMES[invariant]}: {'ok' if not found else f'{len(found)} VIOLATED'}")
            lines += [f"    {line}" for line in found[:5]]
        lines.append(f"valid: {self.valid}")
        return "\n".join(lines)


INVARIANTS = ("G1", "G2", "G3", "G4", "G5", "G6", "G7", "G8")
NAMES = {"G1": "no acknowledged write lost", "G2": "nothing unexpected", "G3": "one effect per request id",
         "G4": "every event published", "G5": "the stream in version order", "G6": "read model converged",
         "G7": "no version regression", "G8": "healthy, resources bounded"}


def check(ops: list[Op], seen: Observed) -> Report:
    """An `info` call is judged by its effects like any other: it may or may not have happened,
    but at most once, and never as something no client asked for."""
    calls = [op for op in ops if op.type != "nemesis"]
    counts = Counter(op.type for op in calls if op.type != INVOKE)
    faults = Counter(op.f for op in ops if op.type == "nemesis" and op.f != "heal")
    found: dict[str, list[str]] = defaultdict(list)
    about: dict[str, set[str]] = defaultdict(set)

    def violation(invariant: str, order_id: str, text: str) -> None:
        found[invariant].append(f"{order_id}: {text}")
        about[invariant].add(order_id)

    invoked_orders = {op.order_id for op in calls if op.type == INVOKE}
    invoked_requests = {op.request_id for op in calls if op.type == INVOKE}
    effects: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for order_id, events in seen.events.items():
        for event in events:
            effects[event.causation_id].append((order_id, event.version))

    # G1: every acknowledged call's effect is there, at the version it answered.
    for op in calls:
        if op.type != OK:
            continue
        if (op.order_id, op.version) not in effects.get(op.request_id, []):
            violation("G1", op.order_id, f"{op.f} {op.request_id} answered version {op.version}, "
                                         f"which the events table does not hold as its effect")
        if op.f == "place" and op.order_id in seen.orders and seen.orders[op.order_id].total != op.total:
            violation("G1", op.order_id, f"total {seen.orders[op.order_id].total}, placed with {op.total}")
        if op.request_id not in seen.responses:
            violation("G1", op.order_id, f"{op.request_id} acknowledged but not recorded")

    # G2: nothing the clients did not ask for.
    for order_id in seen.orders.keys() - invoked_orders:
        violation("G2", order_id, "an order no client placed")
    for request_id, where in effects.items():
        if request_id not in invoked_requests:
            violation("G2", where[0][0], f"an event caused by {request_id}, which no client sent")

    # G3: one effect per request id, and every answer to it the same.
    for request_id, where in effects.items():
        if len(where) > 1:
            violation("G3", where[0][0], f"{request_id} had {len(where)} effects: versions {[v for _, v in where]}")
    answers: dict[str, set[str]] = defaultdict(set)
    for op in calls:
        if op.type == OK and op.response:
            answers[op.request_id].add(op.response)
    for request_id, distinct in answers.items():
        if len(distinct) > 1:
            order_id = next(op.order_id for op in calls if op.request_id == request_id)
            violation("G3", order_id, f"{request_id} answered {len(distinct)} different responses")
    for op in calls:
        if op.type == FAIL and op.request_id in effects:
            violation("G3", op.order_id, f"{op.f} {op.request_id} refused ({op.code}) yet took effect")

    # G4: every event published once the system settled.
    for order_id, events in seen.events.items():
        unpublished = [e.version for e in events if not e.published]
        if unpublished:
            violation("G4", order_id, f"versions {unpublished} never published")

    # G5: the stream holds versions 1..n of each order, once each, in order.
    for order_id, row in seen.orders.items():
        versions = seen.stream.get(order_id, [])
        if versions != list(range(1, row.version + 1)):
            violation("G5", order_id, f"stream holds versions {versions[:12]}, the order is at {row.version}")
    for order_id in seen.stream.keys() - seen.orders.keys():
        violation("G5", order_id, "in the stream, not in the orders table")

    # G6: the read model equals the write side.
    for order_id, row in seen.orders.items():
        read = seen.read_model.get(order_id)
        if read != row:
            violation("G6", order_id, f"read model {read}, write side {row}")
    for order_id in seen.read_model.keys() - seen.orders.keys():
        violation("G6", order_id, "in the read model, not in the orders table")

    # G7 and G8: what the sampler, the watchers and the resource checks saw.
    for line in seen.regressions:
        order_id, _, text = line.partition(": ")
        violation("G7", order_id, text)
    for line in seen.resources:
        found["G8"].append(line)

    return Report(counts, faults, dict(found), dict(about))
