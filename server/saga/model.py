"""The saga's rules, pure: what a saga does on each event, refusal, version conflict and deadline,
and which command it sends next. No I/O, no clock: the caller passes the time and the versions it
knows, so every rule is tested without a database, a stream or a server.

Forward, an order's saga reserves the order's total on its customer's credit, then each line's
units, then confirms the order. Any refusal, an expired deadline or a caller's CancelOrder turns
it to compensation: it releases exactly what it holds, in reverse, then cancels the order (unless
a caller already did). A step's outcome is learnt from the step's own event (matched by its
request id), so a duplicate or late event finds no pending step and changes nothing.

A command whose outcome is unknown when the saga turns to compensation (the server did not
answer) is settled first: sent again with the same request id, it either answers with its first
response (it had taken effect: its event follows and its reservation is released like the rest)
or is refused (it never took effect).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from server.domain.commands import CancellationReason
from server.domain.money import Money

# Request ids are uuid5 of this namespace and "<tenant>/<order>/<step>": the same step of the
# same saga always sends the same request id, so it has one effect however often it is sent.
REQUEST_NAMESPACE = uuid.UUID("6f726465-7273-2d73-6167-612d73746570")

# What an event of a step tells the saga (Envelope payload field names).
CREDIT_RESERVED = "credit_reserved"
CREDIT_RELEASED = "credit_released"
STOCK_RESERVED = "stock_reserved"
STOCK_RELEASED = "stock_released"
ORDER_CONFIRMED = "order_confirmed"
ORDER_CANCELLED = "order_cancelled"

# Why a saga compensates (its `note`, and the cancelled order's note).
DEADLINE = "DEADLINE"
CANCELLED_BY_CALLER = "CANCELLED_BY_CALLER"


class State(enum.Enum):
    RESERVING_CREDIT = "RESERVING_CREDIT"
    RESERVING_STOCK = "RESERVING_STOCK"
    CONFIRMING = "CONFIRMING"
    COMPENSATING = "COMPENSATING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    STUCK = "STUCK"  # a compensating step was refused: a bug or a hand-made change; `orders saga retry`


FORWARD = frozenset({State.RESERVING_CREDIT, State.RESERVING_STOCK, State.CONFIRMING})
ACTIVE = FORWARD | {State.COMPENSATING}


class Kind(enum.Enum):
    """The command a step sends, and the aggregate it targets."""

    RESERVE_CREDIT = ("ReserveCredit", "customer")
    RESERVE_STOCK = ("ReserveStock", "product")
    CONFIRM_ORDER = ("ConfirmOrder", "order")
    RELEASE_STOCK = ("ReleaseStock", "product")
    RELEASE_CREDIT = ("ReleaseCredit", "customer")
    CANCEL_ORDER = ("CancelOrder", "order")

    @property
    def method(self) -> str:
        return self.value[0]

    @property
    def aggregate_type(self) -> str:
        return self.value[1]


@dataclass(frozen=True)
class Line:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class Step:
    """The command a saga has sent and awaits the event of."""

    name: str  # "credit", "stock:<line>", "confirm", "release-stock:<line>", "release-credit", "cancel"
    kind: Kind
    target: str  # the id of the aggregate it changes
    request_id: str
    expected_version: int
    caused_by: str  # the id of the event it reacts to: the command's causation id
    line: int = -1  # the order line a stock step is for
    settle: bool = False  # a forward step sent again only to learn whether it took effect
    trace: tuple[tuple[str, str], ...] = ()  # that event's trace context: the step's span joins its trace

    @property
    def cause(self) -> Cause:
        return Cause(self.caused_by, self.trace)


@dataclass(frozen=True)
class Cause:
    """The event a step reacts to: its id, and the trace context its message carried."""

    event_id: str
    trace: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Entry:
    """One line of a saga's history: a step sent, or what became of it."""

    at: float  # seconds since the epoch
    step: str
    outcome: str  # "sent", "done", "refused:<reason>", "conflict", "not-applied", "deadline", ...


# The versions the caller knows of aggregates, by (tenant, type, id): the expected_version a new
# step starts with (a conflict answers with the actual version, and the step is sent again).
Versions = Callable[[str, str, str], int]


@dataclass(frozen=True)
class Saga:
    tenant_id: str
    order_id: str
    customer_id: str
    total: Money
    lines: tuple[Line, ...]
    correlation_id: str
    state: State = State.RESERVING_CREDIT
    deadline: float | None = None  # seconds since the epoch; None once no longer forward
    credit_reserved: bool = False
    stock_reserved: tuple[int, ...] = ()  # units held per line
    pending: Step | None = None
    note: str = ""  # why it compensates
    order_cancelled: bool = False  # the order is CANCELLED (by the saga or a caller)
    history: tuple[Entry, ...] = field(default_factory=tuple)

    @property
    def holds(self) -> bool:
        return self.credit_reserved or any(self.stock_reserved)

    @property
    def cancellation(self) -> CancellationReason:
        """The reason the saga's CancelOrder gives, from its note."""
        if self.note == DEADLINE:
            return CancellationReason.DEADLINE_EXCEEDED
        if self.note.startswith(("CREDIT", "UNKNOWN_CUSTOMER")):
            return CancellationReason.CREDIT_DECLINED
        if self.note.startswith(("OUT_OF_STOCK", "UNKNOWN_PRODUCT")):
            return CancellationReason.OUT_OF_STOCK
        return CancellationReason.OTHER


def request_id(tenant_id: str, order_id: str, step: str) -> str:
    return str(uuid.uuid5(REQUEST_NAMESPACE, f"{tenant_id}/{order_id}/{step}"))


def start(tenant_id: str, order_id: str, customer_id: str, total: Money, lines: tuple[Line, ...],
          correlation_id: str, cause: Cause, now: float, deadline_seconds: float, versions: Versions) -> Saga:
    """A new saga for an order just placed: its first step is the credit reservation."""
    saga = Saga(tenant_id, order_id, customer_id, total, lines, correlation_id, deadline=now + deadline_seconds,
                stock_reserved=(0,) * len(lines))
    return advance(saga, cause, now, versions)


def advance(saga: Saga, cause: Cause, now: float, versions: Versions) -> Saga:
    """The saga with its next step pending (or finished), when nothing is pending."""
    if saga.pending is not None or saga.state not in ACTIVE:
        return saga
    if saga.state is State.COMPENSATING:
        return _next_compensation(saga, cause, now, versions)
    if not saga.credit_reserved:
        return _send(saga, State.RESERVING_CREDIT, "credit", Kind.RESERVE_CREDIT, saga.customer_id, cause, now,
                     versions)
    for line, units in enumerate(saga.stock_reserved):
        if units == 0:
            return _send(saga, State.RESERVING_STOCK, f"stock:{line}", Kind.RESERVE_STOCK,
                         saga.lines[line].product_id, cause, now, versions, line=line)
    return _send(saga, State.CONFIRMING, "confirm", Kind.CONFIRM_ORDER, saga.order_id, cause, now, versions)


def _next_compensation(saga: Saga, cause: Cause, now: float, versions: Versions) -> Saga:
    for line in reversed(range(len(saga.lines))):
        if saga.stock_reserved[line]:
            return _send(saga, State.COMPENSATING, f"release-stock:{line}", Kind.RELEASE_STOCK,
                         saga.lines[line].product_id, cause, now, versions, line=line)
    if saga.credit_reserved:
        return _send(saga, State.COMPENSATING, "release-credit", Kind.RELEASE_CREDIT, saga.customer_id, cause,
                     now, versions)
    if not saga.order_cancelled:
        return _send(saga, State.COMPENSATING, "cancel", Kind.CANCEL_ORDER, saga.order_id, cause, now, versions)
    return replace(saga, state=State.CANCELLED, deadline=None)


def _send(saga: Saga, state: State, name: str, kind: Kind, target: str, cause: Cause, now: float,
          versions: Versions, line: int = -1) -> Saga:
    step = Step(name, kind, target, request_id(saga.tenant_id, saga.order_id, name),
                versions(saga.tenant_id, kind.aggregate_type, target), cause.event_id, line, trace=cause.trace)
    return replace(saga, state=state, pending=step, history=(*saga.history, Entry(now, name, "sent")))


def _log(saga: Saga, now: float, step: str, outcome: str) -> tuple[Entry, ...]:
    return (*saga.history, Entry(now, step, outcome))


# --- what happens to a saga -------------------------------------------------------------------


def on_event(saga: Saga, payload: str, request: str, cause: Cause, quantity: int, now: float,
             versions: Versions) -> Saga | None:
    """The saga after an event about its order (`payload` the Envelope's payload field, `request`
    its request id, `quantity` a stock event's units); None when the event changes nothing (a
    duplicate, a late delivery, another caller's reservation)."""
    pending = saga.pending
    if pending is not None and request == pending.request_id:
        return advance(_took_effect(saga, pending, payload, quantity, now), cause, now, versions)
    if payload == ORDER_CANCELLED and not saga.order_cancelled and saga.state is not State.CANCELLED:
        # A caller cancelled the order: give back whatever the saga holds (a confirmed order's
        # credit and stock too), and send no CancelOrder of its own.
        cancelled = replace(saga, order_cancelled=True, history=_log(saga, now, "order", "cancelled-by-caller"))
        if saga.state in FORWARD or saga.state is State.CONFIRMED:
            cancelled = _compensate(cancelled, CANCELLED_BY_CALLER)
        return advance(cancelled, cause, now, versions)
    return None


def _took_effect(saga: Saga, step: Step, payload: str, quantity: int, now: float) -> Saga:
    done = replace(saga, pending=None, history=_log(saga, now, step.name, "done"))
    match payload:
        case "credit_reserved":
            return replace(done, credit_reserved=True)
        case "credit_released":
            return replace(done, credit_reserved=False)
        case "stock_reserved" | "stock_released":
            units = list(saga.stock_reserved)
            units[step.line] = quantity if payload == STOCK_RESERVED else 0
            return replace(done, stock_reserved=tuple(units))
        case "order_confirmed":
            return replace(done, state=State.CONFIRMED, deadline=None)
        case "order_cancelled":
            return replace(done, order_cancelled=True)
    return done


def _compensate(saga: Saga, note: str) -> Saga:
    """Turns a saga to compensation; a forward command it still awaits is settled first."""
    pending = saga.pending
    if pending is not None and pending.kind in (Kind.RESERVE_CREDIT, Kind.RESERVE_STOCK, Kind.CONFIRM_ORDER):
        pending = replace(pending, settle=True)
    return replace(saga, state=State.COMPENSATING, note=saga.note or note, deadline=None, pending=pending)


def on_refused(saga: Saga, request: str, reason: str, now: float, versions: Versions) -> Saga | None:
    """The saga after the command of `request` was refused for `reason` (it took no effect); None
    when that is no longer the pending step."""
    step = saga.pending
    if step is None or step.request_id != request:
        return None
    refused = replace(saga, pending=None, history=_log(saga, now, step.name, f"refused:{reason}"))
    if step.settle:
        return advance(refused, step.cause, now, versions)
    if step.kind in (Kind.CONFIRM_ORDER, Kind.CANCEL_ORDER) and reason == "ORDER_STATE":
        # A caller decided the order's fate first (confirmed, shipped or cancelled it): the saga
        # gives back what it holds and leaves the order as it is.
        settled = _compensate(refused, saga.note or "ORDER_STATE") if saga.state in FORWARD else refused
        return advance(replace(settled, order_cancelled=True), step.cause, now, versions)
    if saga.state in FORWARD:
        return advance(_compensate(refused, _why(step, reason)), step.cause, now, versions)
    return replace(refused, state=State.STUCK, pending=step, note=saga.note or _why(step, reason))


def _why(step: Step, reason: str) -> str:
    """What a person reads on the cancelled order: CREDIT_LIMIT, OUT_OF_STOCK:<product>, ..."""
    if step.kind is Kind.RESERVE_STOCK:
        return f"{'UNKNOWN_PRODUCT' if reason == 'NOT_FOUND' else 'OUT_OF_STOCK'}:{step.target}"
    if step.kind is Kind.RESERVE_CREDIT and reason == "NOT_FOUND":
        return "UNKNOWN_CUSTOMER"
    return reason


def on_conflict(saga: Saga, request: str, actual: int, now: float, versions: Versions) -> Saga | None:
    """The saga after the command of `request` met a newer version of its aggregate (it took no
    effect): sent again at `actual`, unless it was only being settled."""
    step = saga.pending
    if step is None or step.request_id != request:
        return None
    if step.settle:
        return advance(replace(saga, pending=None, history=_log(saga, now, step.name, "not-applied")),
                       step.cause, now, versions)
    return replace(saga, pending=replace(step, expected_version=actual))


def on_deadline(saga: Saga, now: float, versions: Versions) -> Saga | None:
    """The saga once its deadline has passed: compensating, if it was still going forward."""
    if saga.state not in FORWARD or saga.deadline is None or now < saga.deadline:
        return None
    expired = replace(_compensate(saga, DEADLINE), history=_log(saga, now, "deadline", "expired"))
    return advance(expired, saga.pending.cause if saga.pending else Cause(""), now, versions)


def retry(saga: Saga, now: float) -> Saga | None:
    """A stuck saga, back to compensating with the same pending step (`orders saga retry`)."""
    if saga.state is not State.STUCK:
        return None
    return replace(saga, state=State.COMPENSATING, history=_log(saga, now, "retry", "by-operator"))
