"""Given-When-Then tests of every command and rule, and Hypothesis properties of the invariants."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import commands as c
from server.domain import events as e
from server.domain import model
from server.domain.errors import PreconditionFailedError, VersionConflictError
from server.domain.money import NANOS_PER_UNIT, Money

EUR = "EUR"


def eur(units: int, nanos: int = 0) -> Money:
    return Money(EUR, units, nanos)


ADA = model.Customer("c-1", "Ada", "ada@example.com", eur(100), eur(0), version=1)
WIDGET = model.Product("p-1", on_hand=10, reserved=0, version=1)


def line(product: str = "p-1", quantity: int = 1, units: int = 1, nanos: int = 0, currency: str = EUR) -> c.OrderLine:
    return c.OrderLine(product, quantity, Money(currency, units, nanos))


def place(*lines: c.OrderLine, order_id: str = "o-1", customer_id: str = "c-1") -> c.PlaceOrder:
    return c.PlaceOrder(order_id, customer_id, tuple(lines))


def placed_order(version: int = 1, state: model.OrderState = model.OrderState.PLACED) -> model.Order:
    order, _ = model.place_order(place(line()))
    return replace(order, version=version, state=state)


def bad_fields(cmd: c.Command) -> set[str]:
    return {v.field for v in cmd.violations()}


# --- PlaceOrder -------------------------------------------------------------------------------


def test_when_an_order_is_placed_then_it_is_placed_at_version_1_with_the_exact_total() -> None:
    order, event = model.place_order(place(line(quantity=3, units=9, nanos=990_000_000), line("p-2", 1, 0, 10_000_000)))

    assert (order.state, order.version) == (model.OrderState.PLACED, 1)
    assert order.total == eur(29, 980_000_000)
    assert event == e.OrderPlaced("o-1", "c-1", order.lines, order.total)


def test_an_order_for_an_unregistered_customer_fails_its_precondition() -> None:
    # The store raises it when the order's foreign key finds no customer (tests/e2e/test_commands.py).
    error = model.unregistered_customer("c-1")
    assert isinstance(error, PreconditionFailedError)
    assert (error.kind, error.subject) == ("CUSTOMER_EXISTS", "customers/c-1")


def test_when_an_order_has_no_lines_then_lines_is_named() -> None:
    assert bad_fields(place()) == {"lines"}


def test_when_an_order_has_too_many_lines_then_lines_is_named() -> None:
    assert bad_fields(place(*[line()] * (c.MAX_LINES + 1))) == {"lines"}


@pytest.mark.parametrize("quantity", [0, -1, c.MAX_QUANTITY + 1])
def test_when_a_quantity_is_not_positive_or_too_large_then_that_line_quantity_is_named(quantity: int) -> None:
    assert bad_fields(place(line(), line(quantity=quantity))) == {"lines[1].quantity"}


@pytest.mark.parametrize(("units", "nanos"), [(0, 0), (-1, 0), (0, -5)])
def test_when_a_unit_price_is_not_positive_then_it_is_named(units: int, nanos: int) -> None:
    assert bad_fields(place(line(units=units, nanos=nanos))) == {"lines[0].unit_price"}


def test_when_every_field_is_bad_then_every_field_is_named() -> None:
    cmd = place(line(product="", quantity=0, units=1, nanos=2_000_000_000, currency="eur"), order_id="", customer_id="?")
    assert bad_fields(cmd) == {
        "order_id",
        "customer_id",
        "lines[0].product_id",
        "lines[0].quantity",
        "lines[0].unit_price.currency_code",
        "lines[0].unit_price.nanos",
    }


def test_when_lines_mix_currencies_then_lines_is_named() -> None:
    assert bad_fields(place(line(currency="EUR"), line(currency="USD"))) == {"lines"}


def test_when_units_and_nanos_disagree_in_sign_then_nanos_is_named() -> None:
    assert bad_fields(place(line(units=2, nanos=-1))) == {"lines[0].unit_price.nanos"}


def test_when_an_id_is_oversize_then_it_is_named() -> None:
    assert bad_fields(place(line(), order_id="o" * 65)) == {"order_id"}


# --- RegisterCustomer and credit --------------------------------------------------------------


def test_when_a_customer_registers_then_it_exists_at_version_1_with_no_credit_reserved() -> None:
    customer, event = model.register_customer(c.RegisterCustomer("c-1", "Ada", "ada@example.com", eur(100)))
    assert customer == ADA
    assert event == e.CustomerRegistered("c-1", "Ada", "ada@example.com", eur(100))


def test_when_a_customer_registers_with_bad_fields_then_each_is_named() -> None:
    cmd = c.RegisterCustomer("c-1", " ", "not-an-email", Money("EUR", -1, 0))
    assert bad_fields(cmd) == {"display_name", "email", "credit_limit"}


def test_when_a_display_name_is_oversize_then_it_is_named() -> None:
    assert bad_fields(c.RegisterCustomer("c-1", "x" * 201, "a@b.c", eur(0))) == {"display_name"}


def test_given_credit_left_when_credit_is_reserved_then_it_is_held_and_the_version_moves_on() -> None:
    customer, event = model.reserve_credit(ADA, c.ReserveCredit("c-1", 1, eur(60), "o-1"))
    assert (customer.credit_reserved, customer.version) == (eur(60), 2)
    assert event == e.CreditReserved("c-1", "o-1", eur(60))


def test_given_too_little_credit_when_credit_is_reserved_then_the_limit_holds() -> None:
    customer = replace(ADA, credit_reserved=eur(60))
    with pytest.raises(PreconditionFailedError) as caught:
        model.reserve_credit(customer, c.ReserveCredit("c-1", 1, eur(40, 1), "o-1"))
    assert caught.value.kind == "CREDIT_LIMIT"


def test_when_credit_is_reserved_in_another_currency_then_the_precondition_fails() -> None:
    with pytest.raises(PreconditionFailedError) as caught:
        model.reserve_credit(ADA, c.ReserveCredit("c-1", 1, Money("USD", 1, 0), "o-1"))
    assert caught.value.kind == "CREDIT_CURRENCY"


def test_given_reserved_credit_when_it_is_released_then_it_is_available_again() -> None:
    customer, event = model.release_credit(replace(ADA, credit_reserved=eur(60)), c.ReleaseCredit("c-1", 1, eur(60), "o-1"))
    assert customer.credit_reserved == eur(0)
    assert event == e.CreditReleased("c-1", "o-1", eur(60))


def test_when_more_credit_is_released_than_reserved_then_the_precondition_fails() -> None:
    with pytest.raises(PreconditionFailedError) as caught:
        model.release_credit(ADA, c.ReleaseCredit("c-1", 1, eur(1), "o-1"))
    assert caught.value.kind == "CREDIT_RESERVED"


def test_when_the_expected_version_is_stale_then_the_conflict_names_both_versions() -> None:
    with pytest.raises(VersionConflictError) as caught:
        model.reserve_credit(replace(ADA, version=3), c.ReserveCredit("c-1", 2, eur(1), "o-1"))
    assert (caught.value.expected, caught.value.actual) == (2, 3)


def test_when_a_credit_command_lacks_a_version_then_expected_version_is_named() -> None:
    assert bad_fields(c.ReserveCredit("c-1", 0, eur(1), "o-1")) == {"expected_version"}


# --- stock ------------------------------------------------------------------------------------


def test_given_no_product_when_stock_is_added_at_version_0_then_the_product_exists_at_version_1() -> None:
    product, event = model.add_stock(None, c.AddStock("p-1", 0, 10))
    assert product == WIDGET
    assert event == e.StockAdded("p-1", 10)


def test_given_a_product_when_stock_is_added_then_it_is_on_hand() -> None:
    product, _ = model.add_stock(WIDGET, c.AddStock("p-1", 1, 5))
    assert (product.on_hand, product.version) == (15, 2)


def test_when_stock_quantity_is_not_positive_then_quantity_is_named() -> None:
    assert bad_fields(c.AddStock("p-1", 0, 0)) == {"quantity"}


def test_given_stock_when_units_are_reserved_then_fewer_are_available() -> None:
    product, event = model.reserve_stock(WIDGET, c.ReserveStock("p-1", 1, 4, "o-1"))
    assert (product.available, product.reserved) == (6, 4)
    assert event == e.StockReserved("p-1", "o-1", 4)


def test_when_more_units_are_reserved_than_available_then_the_precondition_fails() -> None:
    with pytest.raises(PreconditionFailedError) as caught:
        model.reserve_stock(WIDGET, c.ReserveStock("p-1", 1, 11, "o-1"))
    assert caught.value.kind == "STOCK_AVAILABLE"


def test_given_reserved_units_when_they_are_released_then_they_are_available_again() -> None:
    product, event = model.release_stock(replace(WIDGET, reserved=4), c.ReleaseStock("p-1", 1, 4, "o-1"))
    assert product.available == 10
    assert event == e.StockReleased("p-1", "o-1", 4)


def test_when_more_units_are_released_than_reserved_then_the_precondition_fails() -> None:
    with pytest.raises(PreconditionFailedError) as caught:
        model.release_stock(WIDGET, c.ReleaseStock("p-1", 1, 1, "o-1"))
    assert caught.value.kind == "STOCK_RESERVED"


# --- the order lifecycle ----------------------------------------------------------------------


def test_given_a_placed_order_when_it_is_confirmed_then_it_is_confirmed_at_the_next_version() -> None:
    order, event = model.confirm_order(placed_order(), c.ConfirmOrder("o-1", 1))
    assert (order.state, order.version) == (model.OrderState.CONFIRMED, 2)
    assert event == e.OrderConfirmed("o-1")


def test_given_a_confirmed_order_when_it_is_shipped_then_it_is_shipped() -> None:
    order, event = model.ship_order(placed_order(2, model.OrderState.CONFIRMED), c.ShipOrder("o-1", 2))
    assert (order.state, order.version) == (model.OrderState.SHIPPED, 3)
    assert event == e.OrderShipped("o-1")


@pytest.mark.parametrize("state", [model.OrderState.PLACED, model.OrderState.CONFIRMED])
def test_given_an_unshipped_order_when_it_is_cancelled_then_it_is_cancelled_with_its_reason(state: model.OrderState) -> None:
    order, event = model.cancel_order(placed_order(2, state), c.CancelOrder("o-1", 2, c.CancellationReason.OUT_OF_STOCK, "sorry"))
    assert order.state is model.OrderState.CANCELLED
    assert event == e.OrderCancelled("o-1", c.CancellationReason.OUT_OF_STOCK, "sorry")


def test_given_a_placed_order_when_it_is_shipped_then_the_state_precondition_fails() -> None:
    with pytest.raises(PreconditionFailedError) as caught:
        model.ship_order(placed_order(), c.ShipOrder("o-1", 1))
    assert (caught.value.kind, caught.value.subject) == ("ORDER_STATE", "orders/o-1")


@pytest.mark.parametrize("state", [model.OrderState.SHIPPED, model.OrderState.CANCELLED])
def test_given_a_finished_order_when_it_is_cancelled_then_the_state_precondition_fails(state: model.OrderState) -> None:
    with pytest.raises(PreconditionFailedError):
        model.cancel_order(placed_order(3, state), c.CancelOrder("o-1", 3, c.CancellationReason.OTHER, ""))


def test_when_the_order_version_is_stale_then_the_conflict_comes_before_the_state_rule() -> None:
    with pytest.raises(VersionConflictError):
        model.ship_order(placed_order(2), c.ShipOrder("o-1", 1))


def test_when_a_cancellation_has_no_reason_or_an_oversize_note_then_both_are_named() -> None:
    assert bad_fields(c.CancelOrder("o-1", 1, None, "x" * 501)) == {"reason", "note"}


# --- properties -------------------------------------------------------------------------------

prices = st.builds(eur, st.integers(0, 10**6), st.integers(0, NANOS_PER_UNIT - 1)).filter(lambda m: m.total_nanos > 0)
order_lines = st.lists(
    st.builds(c.OrderLine, st.just("p-1"), st.integers(1, c.MAX_QUANTITY), prices), min_size=1, max_size=c.MAX_LINES
)


@given(order_lines)
def test_the_total_is_the_exact_sum_of_quantity_times_price(lines: list[c.OrderLine]) -> None:
    order, _ = model.place_order(place(*lines))
    assert order.total.total_nanos == sum(x.quantity * x.unit_price.total_nanos for x in lines)
    assert 0 <= order.total.nanos < NANOS_PER_UNIT


@given(st.integers(-(10**30), 10**30))
def test_money_round_trips_through_units_and_nanos_without_losing_a_nano(total: int) -> None:
    money = Money.of_nanos(EUR, total)
    assert money.total_nanos == total
    assert abs(money.nanos) < NANOS_PER_UNIT
    assert money.units == 0 or money.nanos == 0 or (money.units > 0) == (money.nanos > 0)


# An independent statement of the lifecycle, to check the model against.
LEGAL = {("PLACED", "ConfirmOrder"), ("CONFIRMED", "ShipOrder"), ("PLACED", "CancelOrder"), ("CONFIRMED", "CancelOrder")}
lifecycle_commands = st.lists(
    st.tuples(st.sampled_from(["ConfirmOrder", "ShipOrder", "CancelOrder"]), st.integers(-1, 1)), max_size=12
)


@given(lifecycle_commands)
def test_no_illegal_transition_ever_succeeds_and_each_event_adds_exactly_one_version(
    script: list[tuple[str, int]],
) -> None:
    order = placed_order()
    decide = {"ConfirmOrder": model.confirm_order, "ShipOrder": model.ship_order, "CancelOrder": model.cancel_order}
    for name, version_skew in script:
        expected = order.version + version_skew
        cmd: c.Command = (
            c.CancelOrder("o-1", expected, c.CancellationReason.OTHER, "")
            if name == "CancelOrder"
            else getattr(c, name)("o-1", expected)
        )
        try:
            changed, _ = decide[name](order, cmd)  # type: ignore[operator]
        except (PreconditionFailedError, VersionConflictError):
            assert version_skew != 0 or (order.state.value, name) not in LEGAL
            continue
        assert version_skew == 0 and (order.state.value, name) in LEGAL
        assert changed.version == order.version + 1
        order = changed


credit_moves = st.lists(st.tuples(st.booleans(), st.integers(1, 50 * NANOS_PER_UNIT)), max_size=30)


@given(credit_moves)
def test_credit_never_loses_a_nano_and_never_exceeds_the_limit(moves: list[tuple[bool, int]]) -> None:
    customer, held, limit = ADA, 0, ADA.credit_limit.total_nanos
    for reserve, nanos in moves:
        amount = Money.of_nanos(EUR, nanos)
        kind = c.ReserveCredit if reserve else c.ReleaseCredit
        cmd = kind("c-1", customer.version, amount, "o-1")
        try:
            customer, _ = (model.reserve_credit if reserve else model.release_credit)(customer, cmd)  # type: ignore[arg-type]
        except PreconditionFailedError:
            # Only a deserved rejection: over the limit, or releasing more than is held.
            assert (held + nanos > limit) if reserve else (nanos > held)
            continue
        held += nanos if reserve else -nanos
        assert customer.credit_reserved.total_nanos == held
        assert 0 <= held <= ADA.credit_limit.total_nanos


@given(st.lists(st.tuples(st.sampled_from(["add", "reserve", "release"]), st.integers(1, 20)), max_size=30))
def test_stock_never_goes_negative_and_reserved_never_exceeds_on_hand(moves: list[tuple[str, int]]) -> None:
    product = WIDGET
    on_hand, reserved = WIDGET.on_hand, WIDGET.reserved  # an independent count to check the model against
    for kind, quantity in moves:
        try:
            if kind == "add":
                product, _ = model.add_stock(product, c.AddStock("p-1", product.version, quantity))
            elif kind == "reserve":
                product, _ = model.reserve_stock(product, c.ReserveStock("p-1", product.version, quantity, "o-1"))
            else:
                product, _ = model.release_stock(product, c.ReleaseStock("p-1", product.version, quantity, "o-1"))
        except PreconditionFailedError:
            # Only a deserved rejection: more than is available, or releasing more than is reserved.
            assert (kind == "reserve" and quantity > on_hand - reserved) or (kind == "release" and quantity > reserved)
            continue
        if kind == "add":
            on_hand += quantity
        else:
            reserved += quantity if kind == "reserve" else -quantity
        assert (product.on_hand, product.reserved) == (on_hand, reserved)
        assert 0 <= product.reserved <= product.on_hand
