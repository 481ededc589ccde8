"""Given-When-Then tests of the seed rules, and properties of exact money."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import model
from server.domain.errors import InvalidCommandError, PreconditionFailedError

EUR = "EUR"
ADA = model.Customer("c-1", "Ada", "ada@example.com", version=1)


def line(product: str = "p-1", quantity: int = 1, units: int = 1, nanos: int = 0, currency: str = EUR) -> model.OrderLine:
    return model.OrderLine(product, quantity, model.Money(currency, units, nanos))


def place(*lines: model.OrderLine, order_id: str = "o-1", customer_id: str = "c-1") -> model.PlaceOrder:
    return model.PlaceOrder(order_id, customer_id, tuple(lines))


def violations(cmd: model.PlaceOrder) -> set[str]:
    with pytest.raises(InvalidCommandError) as caught:
        model.place_order(cmd, ADA)
    return {v.field for v in caught.value.violations}


def test_given_a_registered_customer_when_an_order_is_placed_then_it_is_placed_at_version_1_with_the_exact_total() -> None:
    order, event = model.place_order(place(line(quantity=3, units=9, nanos=990_000_000), line("p-2", 1, 0, 10_000_000)), ADA)

    assert order.state is model.OrderState.PLACED
    assert order.version == 1
    assert order.total == model.Money(EUR, 29, 980_000_000)
    assert event == model.OrderPlaced("o-1", "c-1", order.lines, order.total)


def test_given_no_customer_when_an_order_is_placed_then_the_precondition_fails() -> None:
    with pytest.raises(PreconditionFailedError) as caught:
        model.place_order(place(line()), None)
    assert caught.value.subject == "customers/c-1"


def test_when_an_order_has_no_lines_then_lines_is_named() -> None:
    assert violations(place()) == {"lines"}


@pytest.mark.parametrize("quantity", [0, -1, model.MAX_QUANTITY + 1])
def test_when_a_quantity_is_not_positive_or_too_large_then_that_line_quantity_is_named(quantity: int) -> None:
    assert violations(place(line(), line(quantity=quantity))) == {"lines[1].quantity"}


@pytest.mark.parametrize(("units", "nanos"), [(0, 0), (-1, 0), (0, -5)])
def test_when_a_unit_price_is_not_positive_then_it_is_named(units: int, nanos: int) -> None:
    assert violations(place(line(units=units, nanos=nanos))) == {"lines[0].unit_price"}


def test_when_every_field_is_bad_then_every_field_is_named() -> None:
    cmd = place(line(product="", quantity=0, units=1, nanos=2_000_000_000, currency="eur"), order_id="", customer_id="?")
    assert violations(cmd) == {
        "order_id",
        "customer_id",
        "lines[0].product_id",
        "lines[0].quantity",
        "lines[0].unit_price.currency_code",
        "lines[0].unit_price.nanos",
    }


def test_when_lines_mix_currencies_then_lines_is_named() -> None:
    assert violations(place(line(currency="EUR"), line(currency="USD"))) == {"lines"}


def test_when_units_and_nanos_disagree_in_sign_then_nanos_is_named() -> None:
    assert violations(place(line(units=2, nanos=-1))) == {"lines[0].unit_price.nanos"}


def test_when_a_customer_registers_with_a_bad_email_and_no_name_then_both_are_named() -> None:
    with pytest.raises(InvalidCommandError) as caught:
        model.register_customer(model.RegisterCustomer("c-1", " ", "not-an-email"))
    assert {v.field for v in caught.value.violations} == {"display_name", "email"}


def test_when_a_customer_registers_then_it_exists_at_version_1() -> None:
    customer, event = model.register_customer(model.RegisterCustomer("c-1", "Ada", "ada@example.com"))
    assert customer == ADA
    assert event == model.CustomerRegistered("c-1", "Ada", "ada@example.com")


prices = st.builds(
    lambda units, nanos: model.Money(EUR, units, nanos),
    st.integers(0, 10**6),
    st.integers(0, 999_999_999),
).filter(lambda m: m.total_nanos > 0)
lines = st.lists(
    st.builds(line, product=st.just("p-1"), quantity=st.integers(1, model.MAX_QUANTITY)).flatmap(
        lambda base: prices.map(lambda price: model.OrderLine(base.product_id, base.quantity, price))
    ),
    min_size=1,
    max_size=model.MAX_LINES,
)


@given(lines)
def test_the_total_is_the_exact_sum_of_quantity_times_price(order_lines: list[model.OrderLine]) -> None:
    order, _ = model.place_order(place(*order_lines), ADA)
    assert order.total.total_nanos == sum(l.quantity * l.unit_price.total_nanos for l in order_lines)
    assert 0 <= order.total.nanos < model.NANOS_PER_UNIT


@given(st.integers(-(10**30), 10**30))
def test_money_round_trips_through_units_and_nanos_without_losing_a_nano(total: int) -> None:
    money = model.Money.of_nanos(EUR, total)
    assert money.total_nanos == total
    assert abs(money.nanos) < model.NANOS_PER_UNIT
    assert money.units == 0 or money.nanos == 0 or (money.units > 0) == (money.nanos > 0)
