"""Aggregates, commands and events of the order domain, and the rules that guard them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from server.domain.errors import FieldViolation, InvalidCommandError, PreconditionFailedError

NANOS_PER_UNIT = 1_000_000_000
MAX_UNITS = 2**63 - 1
MAX_LINES = 100
MAX_QUANTITY = 1_000_000
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Money:
    """An exact amount: `units` + `nanos`/10^9 of `currency_code`."""

    currency_code: str
    units: int
    nanos: int

    @classmethod
    def of_nanos(cls, currency_code: str, total_nanos: int) -> Money:
        units, nanos = divmod(abs(total_nanos), NANOS_PER_UNIT)
        sign = -1 if total_nanos < 0 else 1
        return cls(currency_code, sign * units, sign * nanos)

    @property
    def total_nanos(self) -> int:
        return self.units * NANOS_PER_UNIT + self.nanos

    def times(self, quantity: int) -> Money:
        return Money.of_nanos(self.currency_code, self.total_nanos * quantity)

    def __add__(self, other: Money) -> Money:
        if other.currency_code != self.currency_code:
            raise ValueError("cannot add amounts in different currencies")
        return Money.of_nanos(self.currency_code, self.total_nanos + other.total_nanos)


class OrderState(Enum):
    PLACED = "PLACED"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class OrderLine:
    product_id: str
    quantity: int
    unit_price: Money

    @property
    def amount(self) -> Money:
        return self.unit_price.times(self.quantity)


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterCustomer:
    customer_id: str
    display_name: str
    email: str


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRegistered:
    customer_id: str
    display_name: str
    email: str


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    total: Money


Event = CustomerRegistered | OrderPlaced


# --- aggregates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    customer_id: str
    display_name: str
    email: str
    version: int


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    total: Money
    state: OrderState
    version: int


def register_customer(cmd: RegisterCustomer) -> tuple[Customer, CustomerRegistered]:
    """A new customer at version 1, or InvalidCommandError naming every bad field."""
    violations = _check_id("customer_id", cmd.customer_id)
    if not cmd.display_name.strip():
        violations.append(FieldViolation("display_name", "must not be empty"))
    elif len(cmd.display_name) > MAX_NAME_LENGTH:
        violations.append(FieldViolation("display_name", f"must be at most {MAX_NAME_LENGTH} characters"))
    if len(cmd.email) > MAX_EMAIL_LENGTH or not re.fullmatch(r"[^@\s]+@[^@\s]+", cmd.email):
        violations.append(FieldViolation("email", "must be an email address"))
    if violations:
        raise InvalidCommandError(violations)
    event = CustomerRegistered(cmd.customer_id, cmd.display_name, cmd.email)
    return Customer(cmd.customer_id, cmd.display_name, cmd.email, version=1), event


def validate_place_order(cmd: PlaceOrder) -> None:
    """Raises InvalidCommandError naming every malformed field of the command."""
    violations = _check_id("order_id", cmd.order_id) + _check_id("customer_id", cmd.customer_id)
    if not cmd.lines:
        violations.append(FieldViolation("lines", "an order needs at least one line"))
    elif len(cmd.lines) > MAX_LINES:
        violations.append(FieldViolation("lines", f"at most {MAX_LINES} lines per order"))
    for i, line in enumerate(cmd.lines[:MAX_LINES]):
        violations += _check_id(f"lines[{i}].product_id", line.product_id)
        if not 0 < line.quantity <= MAX_QUANTITY:
            violations.append(
                FieldViolation(f"lines[{i}].quantity", f"must be between 1 and {MAX_QUANTITY}")
            )
        violations += _check_price(f"lines[{i}].unit_price", line.unit_price)
    currencies = {line.unit_price.currency_code for line in cmd.lines}
    if len(currencies) > 1:
        violations.append(FieldViolation("lines", "all lines must use one currency"))
    if not violations:
        total = _sum(cmd.lines)
        if abs(total.units) > MAX_UNITS:
            violations.append(FieldViolation("lines", "the order total is too large"))
    if violations:
        raise InvalidCommandError(violations)


def place_order(cmd: PlaceOrder, customer: Customer | None) -> tuple[Order, OrderPlaced]:
    """A new order at version 1 for an existing customer, with its exact total."""
    validate_place_order(cmd)
    if customer is None:
        raise PreconditionFailedError(
            "CUSTOMER_EXISTS", f"customers/{cmd.customer_id}", "the customer must be registered first"
        )
    total = _sum(cmd.lines)
    order = Order(cmd.order_id, cmd.customer_id, cmd.lines, total, OrderState.PLACED, version=1)
    return order, OrderPlaced(cmd.order_id, cmd.customer_id, cmd.lines, total)


def _sum(lines: tuple[OrderLine, ...]) -> Money:
    total = Money.of_nanos(lines[0].unit_price.currency_code, 0)
    for line in lines:
        total = total + line.amount
    return total


def _check_id(field: str, value: str) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "must not be empty")]
    if not _ID.match(value):
        return [
            FieldViolation(field, "must be 1-64 letters, digits or _.:- and start with a letter or digit")
        ]
    return []


def _check_price(field: str, price: Money) -> list[FieldViolation]:
    violations = []
    if not _CURRENCY.match(price.currency_code):
        violations.append(FieldViolation(f"{field}.currency_code", "must be a 3-letter ISO 4217 code"))
    if not -NANOS_PER_UNIT < price.nanos < NANOS_PER_UNIT:
        violations.append(FieldViolation(f"{field}.nanos", "must be between -999999999 and 999999999"))
    elif (price.units > 0 and price.nanos < 0) or (price.units < 0 and price.nanos > 0):
        violations.append(FieldViolation(f"{field}.nanos", "must have the same sign as units"))
    elif price.total_nanos <= 0:
        violations.append(FieldViolation(field, "must be greater than zero"))
    return violations
