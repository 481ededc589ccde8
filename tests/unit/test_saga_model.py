"""The saga's rules (server/saga/model.py), pure: the steps they choose, and a property over
random worlds: whatever the credit and stock, whichever answers are lost, duplicated or late, and
whenever the deadline passes, a saga ends CONFIRMED holding exactly its order's credit and stock,
or CANCELLED holding nothing, and each step has at most one effect."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from server.domain.commands import CancellationReason
from server.domain.money import Money
from server.saga import model
from server.saga.model import Cause, Kind, Line, Saga, State

EUR = "EUR"


def no_versions(tenant_id: str, aggregate_type: str, aggregate_id: str) -> int:
    return 1


def new_saga(lines: tuple[Line, ...] = (Line("p-1", 2), Line("p-2", 1)), total: int = 30) -> Saga:
    return model.start("t", "o-1", "c-1", Money(EUR, total, 0), lines, "corr-1", Cause("e-placed"), now=0.0,
                       deadline_seconds=30, versions=no_versions)


def test_a_saga_starts_by_reserving_the_orders_total_on_the_customers_credit() -> None:
    saga = new_saga()
    assert saga.state is State.RESERVING_CREDIT
    assert saga.pending is not None
    assert (saga.pending.kind, saga.pending.target, saga.pending.caused_by) == (Kind.RESERVE_CREDIT, "c-1", "e-placed")
    assert saga.pending.request_id == model.request_id("t", "o-1", "credit")
    assert saga.deadline == 30


def test_each_step_event_moves_it_on_and_names_the_event_as_the_next_steps_cause() -> None:
    saga = new_saga()
    names = []
    for payload, quantity in (("credit_reserved", 0), ("stock_reserved", 2), ("stock_reserved", 1),
                              ("order_confirmed", 0)):
        assert saga.pending is not None
        names.append(saga.pending.name)
        changed = model.on_event(saga, payload, saga.pending.request_id, Cause(f"e-{payload}"), quantity, 1.0,
                                 no_versions)
        assert changed is not None
        saga = changed
    assert names == ["credit", "stock:0", "stock:1", "confirm"]
    assert (saga.state, saga.pending, saga.deadline) == (State.CONFIRMED, None, None)
    assert (saga.credit_reserved, saga.stock_reserved) == (True, (2, 1))


def test_an_event_that_is_not_the_pending_steps_changes_nothing() -> None:
    saga = new_saga()
    assert model.on_event(saga, "credit_reserved", "someone-elses-request", Cause("e"), 0, 1.0, no_versions) is None
    assert model.on_event(saga, "stock_reserved", "", Cause("e"), 3, 1.0, no_versions) is None


def test_a_refused_stock_line_releases_the_lines_before_it_then_the_credit_then_cancels() -> None:
    saga = new_saga()
    for payload, quantity in (("credit_reserved", 0), ("stock_reserved", 2)):
        assert saga.pending is not None
        saga = model.on_event(saga, payload, saga.pending.request_id, Cause("e"), quantity, 1.0, no_versions) or saga
    assert saga.pending is not None and saga.pending.name == "stock:1"
    saga = model.on_refused(saga, saga.pending.request_id, "STOCK_AVAILABLE", 2.0, no_versions) or saga
    steps = []
    while saga.pending is not None:
        steps.append(saga.pending.name)
        payload = {"release-stock:0": "stock_released", "release-credit": "credit_released",
                   "cancel": "order_cancelled"}[saga.pending.name]
        saga = model.on_event(saga, payload, saga.pending.request_id, Cause("e"), 2, 3.0, no_versions) or saga
    assert steps == ["release-stock:0", "release-credit", "cancel"]
    assert (saga.state, saga.note, saga.cancellation) == (State.CANCELLED, "OUT_OF_STOCK:p-2",
                                                          CancellationReason.OUT_OF_STOCK)


def test_a_conflict_sends_the_same_request_id_again_at_the_actual_version() -> None:
    saga = new_saga()
    assert saga.pending is not None
    again = model.on_conflict(saga, saga.pending.request_id, 7, 1.0, no_versions)
    assert again is not None and again.pending is not None
    assert (again.pending.request_id, again.pending.expected_version) == (saga.pending.request_id, 7)


def test_the_deadline_settles_the_step_in_doubt_before_compensating() -> None:
    saga = new_saga()
    assert model.on_deadline(saga, 29.9, no_versions) is None
    expired = model.on_deadline(saga, 30.0, no_versions)
    assert expired is not None and expired.pending is not None
    assert (expired.state, expired.note, expired.pending.name, expired.pending.settle) == (
        State.COMPENSATING, model.DEADLINE, "credit", True)
    # It had taken effect after all: its event arrives, and the credit is released.
    released = model.on_event(expired, "credit_reserved", expired.pending.request_id, Cause("e"), 0, 31.0, no_versions)
    assert released is not None and released.pending is not None and released.pending.name == "release-credit"
    # Or it had not: a conflict now says so, and the order is cancelled with nothing to release.
    nothing = model.on_conflict(expired, expired.pending.request_id, 3, 31.0, no_versions)
    assert nothing is not None and nothing.pending is not None and nothing.pending.name == "cancel"
    assert nothing.cancellation is CancellationReason.DEADLINE_EXCEEDED


def test_a_callers_cancel_of_a_confirmed_order_releases_everything_and_sends_no_cancel() -> None:
    saga = new_saga(lines=(Line("p-1", 2),), total=10)
    for payload, quantity in (("credit_reserved", 0), ("stock_reserved", 2), ("order_confirmed", 0)):
        assert saga.pending is not None
        saga = model.on_event(saga, payload, saga.pending.request_id, Cause("e"), quantity, 1.0, no_versions) or saga
    cancelled = model.on_event(saga, "order_cancelled", "callers-request", Cause("e-cancel"), 0, 2.0, no_versions)
    assert cancelled is not None
    steps = []
    while cancelled.pending is not None:
        steps.append(cancelled.pending.name)
        payload = "stock_released" if cancelled.pending.kind is Kind.RELEASE_STOCK else "credit_released"
        cancelled = model.on_event(cancelled, payload, cancelled.pending.request_id, Cause("e"), 2, 3.0,
                                   no_versions) or cancelled
    assert steps == ["release-stock:0", "release-credit"]
    assert (cancelled.state, cancelled.note) == (State.CANCELLED, model.CANCELLED_BY_CALLER)


def test_a_refused_release_leaves_the_saga_stuck_until_an_operator_retries() -> None:
    saga = new_saga()
    assert saga.pending is not None
    saga = model.on_event(saga, "credit_reserved", saga.pending.request_id, Cause("e"), 0, 1.0, no_versions) or saga
    assert saga.pending is not None
    saga = model.on_refused(saga, saga.pending.request_id, "NOT_FOUND", 2.0, no_versions) or saga
    assert saga.pending is not None and saga.pending.name == "release-credit"
    stuck = model.on_refused(saga, saga.pending.request_id, "CREDIT_RESERVED", 3.0, no_versions)
    assert stuck is not None and stuck.state is State.STUCK and stuck.pending == saga.pending
    retried = model.retry(stuck, 4.0)
    assert retried is not None and retried.state is State.COMPENSATING and retried.pending == saga.pending


# --- the property -----------------------------------------------------------------------------


@dataclass
class World:
    """A customer's credit and products' stock that apply each request id at most once and
    refuse what the real aggregates refuse; events queue up for delivery."""

    credit_limit: int
    stock: dict[str, int]
    credit: int = 0
    reserved: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    order: str = "PLACED"
    applied: dict[str, int] = field(default_factory=dict)  # request id -> effects
    events: list[tuple[str, str, int]] = field(default_factory=list)  # payload, request id, quantity

    def version(self, target: str) -> int:
        return self.versions.get(target, 1)

    def send(self, saga: Saga, rng: random.Random) -> tuple[str, object]:
        step = saga.pending
        assert step is not None
        if step.request_id in self.applied:
            return "done", None
        if step.expected_version != self.version(step.target):
            return "conflict", self.version(step.target)
        total = saga.total.units
        match step.kind:
            case Kind.RESERVE_CREDIT:
                if self.credit + total > self.credit_limit:
                    return "refused", "CREDIT_LIMIT"
                self.credit += total
                effect = ("credit_reserved", 0)
            case Kind.RELEASE_CREDIT:
                assert self.credit >= total, "released more credit than reserved"
                self.credit -= total
                effect = ("credit_released", 0)
            case Kind.RESERVE_STOCK:
                units = saga.lines[step.line].quantity
                if step.target not in self.stock:
                    return "refused", "NOT_FOUND"
                if self.stock[step.target] - self.reserved.get(step.target, 0) < units:
                    return "refused", "STOCK_AVAILABLE"
                self.reserved[step.target] = self.reserved.get(step.target, 0) + units
                effect = ("stock_reserved", units)
            case Kind.RELEASE_STOCK:
                units = saga.stock_reserved[step.line]
                assert self.reserved.get(step.target, 0) >= units, "released more stock than reserved"
                self.reserved[step.target] -= units
                effect = ("stock_released", units)
            case Kind.CONFIRM_ORDER | Kind.CANCEL_ORDER:
                if self.order != "PLACED" and not (step.kind is Kind.CANCEL_ORDER and self.order == "CONFIRMED"):
                    return "refused", "ORDER_STATE"
                self.order = "CONFIRMED" if step.kind is Kind.CONFIRM_ORDER else "CANCELLED"
                effect = ("order_confirmed" if step.kind is Kind.CONFIRM_ORDER else "order_cancelled", 0)
        self.applied[step.request_id] = 1
        self.versions[step.target] = self.version(step.target) + 1
        self.events.append((effect[0], step.request_id, effect[1]))
        if rng.random() < 0.3:  # delivered twice
            self.events.append((effect[0], step.request_id, effect[1]))
        return "done", None


@given(seed=st.integers(0, 2**32), credit_limit=st.integers(0, 60), stock=st.lists(st.integers(0, 4), min_size=3,
                                                                                      max_size=3))
def test_whatever_happens_a_saga_ends_confirmed_holding_its_order_or_cancelled_holding_nothing(
    seed: int, credit_limit: int, stock: list[int]
) -> None:
    rng = random.Random(seed)
    world = World(credit_limit, {f"p-{i}": units for i, units in enumerate(stock) if units or rng.random() < 0.7})
    lines = tuple(Line(f"p-{i}", rng.randint(1, 3)) for i in range(rng.randint(1, 3)))
    total = sum(line.quantity for line in lines) * 5
    stale: dict[str, int] = {}

    def versions(tenant_id: str, aggregate_type: str, aggregate_id: str) -> int:
        return stale.get(aggregate_id, 1)  # what this process last saw: often stale

    saga = model.start("t", "o-1", "c-1", Money(EUR, total, 0), lines, "corr", Cause("e0"), 0.0, 30, versions)
    now = 0.0
    for _ in range(500):
        if saga.state not in model.ACTIVE and not world.events:
            break
        now += rng.random() * 3
        changed: Saga | None = None
        roll = rng.random()
        if roll < 0.1:
            changed = model.on_deadline(saga, now, versions)
        elif roll < 0.5 and world.events:
            payload, request, quantity = world.events.pop(rng.randrange(len(world.events)))  # any order
            changed = model.on_event(saga, payload, request, Cause("e"), quantity, now, versions)
        elif saga.pending is not None and saga.state in model.ACTIVE:
            step = saga.pending
            answer, detail = world.send(saga, rng)
            if rng.random() < 0.2:  # the answer is lost: the saga learns nothing from it
                continue
            if answer == "conflict":
                stale[step.target] = int(str(detail))
                changed = model.on_conflict(saga, step.request_id, int(str(detail)), now, versions)
            elif answer == "refused":
                changed = model.on_refused(saga, step.request_id, str(detail), now, versions)
        saga = changed or saga

    assert saga.state in (State.CONFIRMED, State.CANCELLED), saga
    assert max(world.applied.values(), default=1) == 1
    if saga.state is State.CONFIRMED:
        assert world.order == "CONFIRMED"
        assert world.credit == total
        assert world.reserved == {p: sum(line.quantity for line in lines if line.product_id == p)
                                  for p in world.reserved}
    else:
        assert world.order == "CANCELLED"
        assert world.credit == 0 and not any(world.reserved.values())
