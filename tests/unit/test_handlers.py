"""Given-When-Then tests of every command handler against an in-memory unit of work: what each
stages and records, and what each refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from server.command import handlers
from server.command.unit_of_work import Aggregate, UnitOfWork, Written
from server.domain import commands as c
from server.domain import events as e
from server.domain import model
from server.domain.errors import (
    AlreadyExistsError,
    DomainError,
    NotFoundError,
    PreconditionFailedError,
    VersionConflictError,
)
from server.domain.money import Money


def eur(units: int) -> Money:
    return Money("EUR", units, 0)


ADA = model.Customer("c-1", "Ada", "ada@example.com", eur(100), eur(10), version=1)
WIDGET = model.Product("p-1", on_hand=10, reserved=2, version=1)
LINES = (c.OrderLine("p-1", 2, eur(5)),)
ORDER = model.Order("o-1", "c-1", LINES, eur(10), model.OrderState.PLACED, version=1)


def key(aggregate: Aggregate) -> tuple[str, str]:
    match aggregate:
        case model.Customer():
            return "customer", aggregate.customer_id
        case model.Product():
            return "product", aggregate.product_id
        case model.Order():
            return "order", aggregate.order_id


class FakeUnitOfWork:
    """The unit of work in memory. `commit` applies the staged change as the write statement does:
    ALREADY_EXISTS for a taken id, the missing reference's error for an order with no customer,
    VERSION_CONFLICT when the row moved on; then the recorded event counts as written."""

    def __init__(self, *aggregates: Aggregate) -> None:
        self.rows = {key(a): a for a in aggregates}
        self.events: list[e.Event] = []
        self._staged: tuple[Aggregate, int | None, Callable[[], DomainError] | None] | None = None
        self._recorded: e.Event | None = None

    async def customer(self, customer_id: str) -> model.Customer | None:
        found = self.rows.get(("customer", customer_id))
        return found if isinstance(found, model.Customer) else None

    async def product(self, product_id: str) -> model.Product | None:
        found = self.rows.get(("product", product_id))
        return found if isinstance(found, model.Product) else None

    async def order(self, order_id: str) -> model.Order | None:
        found = self.rows.get(("order", order_id))
        return found if isinstance(found, model.Order) else None

    def insert(self, aggregate: Aggregate, missing_reference: Callable[[], DomainError] | None = None) -> Written:
        self._staged = (aggregate, None, missing_reference)
        return Written(*key(aggregate), aggregate.version)

    def update(self, aggregate: Aggregate, expected: int) -> Written:
        self._staged = (aggregate, expected, None)
        return Written(*key(aggregate), aggregate.version)

    def unchanged(self, aggregate: Aggregate) -> Written:
        self._staged = (aggregate, -1, None)
        return Written(*key(aggregate), aggregate.version)

    def record(self, event: e.Event) -> None:
        self._recorded = event

    def commit(self) -> None:
        if self._staged is not None and self._staged[1] == -1:  # unchanged: nothing is written
            return
        assert self._staged is not None and self._recorded is not None, "a command changes one aggregate"
        aggregate, expected, missing_reference = self._staged
        current = self.rows.get(key(aggregate))
        if expected is None:
            if current is not None:
                raise AlreadyExistsError(*key(aggregate))
            if isinstance(aggregate, model.Order) and ("customer", aggregate.customer_id) not in self.rows:
                assert missing_reference is not None, "an order refers to its customer"
                raise missing_reference()
        elif current is None:
            raise NotFoundError(*key(aggregate))
        elif current.version != expected:
            raise VersionConflictError(*key(aggregate), expected, current.version)
        self.rows[key(aggregate)] = aggregate
        self.events.append(self._recorded)


def run(handler: Callable[[UnitOfWork, Any], Awaitable[Written]], uow: FakeUnitOfWork, cmd: c.Command) -> Written:
    """When: the handler runs and its unit of work commits."""

    async def scenario() -> Written:
        written = await handler(uow, cmd)
        uow.commit()
        return written

    return asyncio.run(scenario())


# --- customers --------------------------------------------------------------------------------


def test_when_a_customer_registers_then_it_is_inserted_at_version_1_and_registered_is_recorded() -> None:
    uow = FakeUnitOfWork()

    written = run(handlers.register_customer, uow, c.RegisterCustomer("c-1", "Ada", "ada@example.com", eur(100)))

    assert written == Written("customer", "c-1", 1)
    assert uow.rows[("customer", "c-1")] == model.Customer("c-1", "Ada", "ada@example.com", eur(100), eur(0), 1)
    assert uow.events == [e.CustomerRegistered("c-1", "Ada", "ada@example.com", eur(100))]


def test_given_a_registered_customer_when_the_id_registers_again_then_it_already_exists() -> None:
    uow = FakeUnitOfWork(ADA)

    with pytest.raises(AlreadyExistsError):
        run(handlers.register_customer, uow, c.RegisterCustomer("c-1", "Bob", "bob@example.com", eur(5)))
    assert uow.events == []


def test_given_a_customer_when_forgotten_then_the_personal_fields_are_erased_and_forgotten_is_recorded() -> None:
    uow = FakeUnitOfWork(ADA)

    written = run(handlers.forget_customer, uow, c.ForgetCustomer("c-1"))

    assert written == Written("customer", "c-1", 2)
    assert uow.rows[("customer", "c-1")] == replace(ADA, display_name="", email="", forgotten=True, version=2)
    assert uow.events == [e.CustomerForgotten("c-1")]


def test_given_a_forgotten_customer_when_forgotten_again_then_nothing_changes_and_no_event_is_recorded() -> None:
    forgotten = replace(ADA, display_name="", email="", forgotten=True, version=2)
    uow = FakeUnitOfWork(forgotten)

    written = run(handlers.forget_customer, uow, c.ForgetCustomer("c-1"))

    assert written == Written("customer", "c-1", 2)
    assert uow.rows[("customer", "c-1")] == forgotten
    assert uow.events == []


def test_given_no_customer_when_forgotten_then_it_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        run(handlers.forget_customer, FakeUnitOfWork(), c.ForgetCustomer("c-9"))


def test_given_a_customer_when_credit_is_reserved_then_it_is_updated_and_reserved_is_recorded() -> None:
    uow = FakeUnitOfWork(ADA)

    written = run(handlers.reserve_credit, uow, c.ReserveCredit("c-1", 1, eur(30), "o-1"))

    assert written == Written("customer", "c-1", 2)
    assert uow.rows[("customer", "c-1")] == replace(ADA, credit_reserved=eur(40), version=2)
    assert uow.events == [e.CreditReserved("c-1", "o-1", eur(30))]


def test_given_reserved_credit_when_it_is_released_then_it_is_updated_and_released_is_recorded() -> None:
    uow = FakeUnitOfWork(ADA)

    written = run(handlers.release_credit, uow, c.ReleaseCredit("c-1", 1, eur(10), "o-1"))

    assert written == Written("customer", "c-1", 2)
    assert uow.rows[("customer", "c-1")] == replace(ADA, credit_reserved=eur(0), version=2)
    assert uow.events == [e.CreditReleased("c-1", "o-1", eur(10))]


# --- products ---------------------------------------------------------------------------------


def test_when_stock_is_added_at_version_0_then_the_product_is_inserted_and_stock_added_is_recorded() -> None:
    uow = FakeUnitOfWork()

    written = run(handlers.add_stock, uow, c.AddStock("p-1", 0, 5))

    assert written == Written("product", "p-1", 1)
    assert uow.rows[("product", "p-1")] == model.Product("p-1", 5, 0, 1)
    assert uow.events == [e.StockAdded("p-1", 5)]


def test_given_a_product_when_stock_is_added_at_its_version_then_it_is_updated() -> None:
    uow = FakeUnitOfWork(WIDGET)

    written = run(handlers.add_stock, uow, c.AddStock("p-1", 1, 5))

    assert written == Written("product", "p-1", 2)
    assert uow.rows[("product", "p-1")] == replace(WIDGET, on_hand=15, version=2)
    assert uow.events == [e.StockAdded("p-1", 5)]


def test_given_a_product_when_stock_is_added_at_version_0_then_it_already_exists() -> None:
    uow = FakeUnitOfWork(WIDGET)

    with pytest.raises(AlreadyExistsError):
        run(handlers.add_stock, uow, c.AddStock("p-1", 0, 5))
    assert uow.events == []


def test_given_no_product_when_stock_is_added_at_a_later_version_then_it_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        run(handlers.add_stock, FakeUnitOfWork(), c.AddStock("p-1", 3, 5))


def test_given_a_product_when_stock_is_reserved_then_it_is_updated_and_reserved_is_recorded() -> None:
    uow = FakeUnitOfWork(WIDGET)

    written = run(handlers.reserve_stock, uow, c.ReserveStock("p-1", 1, 3, "o-1"))

    assert written == Written("product", "p-1", 2)
    assert uow.rows[("product", "p-1")] == replace(WIDGET, reserved=5, version=2)
    assert uow.events == [e.StockReserved("p-1", "o-1", 3)]


def test_given_reserved_stock_when_it_is_released_then_it_is_updated_and_released_is_recorded() -> None:
    uow = FakeUnitOfWork(WIDGET)

    written = run(handlers.release_stock, uow, c.ReleaseStock("p-1", 1, 2, "o-1"))

    assert written == Written("product", "p-1", 2)
    assert uow.rows[("product", "p-1")] == replace(WIDGET, reserved=0, version=2)
    assert uow.events == [e.StockReleased("p-1", "o-1", 2)]


# --- orders -----------------------------------------------------------------------------------


def test_given_a_customer_when_an_order_is_placed_then_it_is_inserted_and_placed_is_recorded() -> None:
    uow = FakeUnitOfWork(ADA)

    written = run(handlers.place_order, uow, c.PlaceOrder("o-1", "c-1", LINES))

    assert written == Written("order", "o-1", 1)
    assert uow.rows[("order", "o-1")] == ORDER
    assert uow.events == [e.OrderPlaced("o-1", "c-1", LINES, eur(10))]


def test_given_no_customer_when_an_order_is_placed_then_its_precondition_fails() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(PreconditionFailedError) as raised:
        run(handlers.place_order, uow, c.PlaceOrder("o-1", "c-1", LINES))
    assert raised.value.kind == "CUSTOMER_EXISTS"
    assert uow.events == []


def test_given_an_order_when_its_id_is_placed_again_then_it_already_exists() -> None:
    with pytest.raises(AlreadyExistsError):
        run(handlers.place_order, FakeUnitOfWork(ADA, ORDER), c.PlaceOrder("o-1", "c-1", LINES))


@pytest.mark.parametrize(
    ("handler", "cmd", "state", "event"),
    [
        (handlers.confirm_order, c.ConfirmOrder("o-1", 1), model.OrderState.CONFIRMED, e.OrderConfirmed("o-1")),
        (handlers.cancel_order, c.CancelOrder("o-1", 1, c.CancellationReason.OTHER, "n"), model.OrderState.CANCELLED,
         e.OrderCancelled("o-1", c.CancellationReason.OTHER, "n")),
    ],
    ids=["confirm", "cancel"],
)
def test_given_a_placed_order_when_it_moves_on_then_its_new_state_and_event_are_written(
    handler: Callable[[UnitOfWork, Any], Awaitable[Written]], cmd: c.Command, state: model.OrderState, event: e.Event
) -> None:
    uow = FakeUnitOfWork(ORDER)

    written = run(handler, uow, cmd)

    assert written == Written("order", "o-1", 2)
    assert uow.rows[("order", "o-1")] == replace(ORDER, state=state, version=2)
    assert uow.events == [event]


def test_given_a_confirmed_order_when_it_ships_then_it_is_shipped_and_shipped_is_recorded() -> None:
    uow = FakeUnitOfWork(replace(ORDER, state=model.OrderState.CONFIRMED, version=2))

    written = run(handlers.ship_order, uow, c.ShipOrder("o-1", 2))

    assert written == Written("order", "o-1", 3)
    assert uow.rows[("order", "o-1")] == replace(ORDER, state=model.OrderState.SHIPPED, version=3)
    assert uow.events == [e.OrderShipped("o-1")]


# --- every handler that reads: not found, and a stale expected_version --------------------------

READERS: list[tuple[Callable[[UnitOfWork, Any], Awaitable[Written]], Callable[[int], c.Command], Aggregate]] = [
    (handlers.reserve_credit, lambda v: c.ReserveCredit("c-1", v, eur(1), "o-1"), ADA),
    (handlers.release_credit, lambda v: c.ReleaseCredit("c-1", v, eur(1), "o-1"), ADA),
    (handlers.add_stock, lambda v: c.AddStock("p-1", v, 1), WIDGET),
    (handlers.reserve_stock, lambda v: c.ReserveStock("p-1", v, 1, "o-1"), WIDGET),
    (handlers.release_stock, lambda v: c.ReleaseStock("p-1", v, 1, "o-1"), WIDGET),
    (handlers.confirm_order, lambda v: c.ConfirmOrder("o-1", v), ORDER),
    (handlers.ship_order, lambda v: c.ShipOrder("o-1", v), replace(ORDER, state=model.OrderState.CONFIRMED)),
    (handlers.cancel_order, lambda v: c.CancelOrder("o-1", v, c.CancellationReason.OTHER, ""), ORDER),
]
NAMES = [handler.__name__ for handler, _, _ in READERS]


@pytest.mark.parametrize(("handler", "command", "existing"), READERS, ids=NAMES)
def test_given_no_aggregate_when_a_command_names_it_then_it_is_not_found(
    handler: Callable[[UnitOfWork, Any], Awaitable[Written]], command: Callable[[int], c.Command], existing: Aggregate
) -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(NotFoundError) as raised:
        run(handler, uow, command(1))
    assert (raised.value.aggregate_type, raised.value.aggregate_id) == key(existing)
    assert uow.events == []


@pytest.mark.parametrize(("handler", "command", "existing"), READERS, ids=NAMES)
def test_given_an_aggregate_when_a_command_expects_another_version_then_it_conflicts(
    handler: Callable[[UnitOfWork, Any], Awaitable[Written]], command: Callable[[int], c.Command], existing: Aggregate
) -> None:
    uow = FakeUnitOfWork(existing)

    with pytest.raises(VersionConflictError) as raised:
        run(handler, uow, command(existing.version + 1))
    assert (raised.value.expected, raised.value.actual) == (existing.version + 1, existing.version)
    assert uow.rows[key(existing)] == existing and uow.events == []


def test_given_a_change_staged_when_the_aggregate_moves_on_before_the_commit_then_it_conflicts() -> None:
    # The store's guard, not the handler, catches a write between the read and the commit.
    uow = FakeUnitOfWork(WIDGET)

    async def scenario() -> None:
        await handlers.reserve_stock(uow, c.ReserveStock("p-1", 1, 1, "o-1"))
        uow.rows[("product", "p-1")] = replace(WIDGET, version=2)
        uow.commit()

    with pytest.raises(VersionConflictError):
        asyncio.run(scenario())
