"""Commands: what callers ask for, in the imperative. Each knows what is malformed about itself."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum

from server.domain.errors import FieldViolation
from server.domain.money import MAX_UNITS, Money, money_violations

MAX_LINES = 100
MAX_QUANTITY = 1_000_000
MAX_STOCK_QUANTITY = 10**12
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_NOTE_LENGTH = 500
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class CancellationReason(Enum):
    CUSTOMER_REQUEST = "CUSTOMER_REQUEST"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    CREDIT_DECLINED = "CREDIT_DECLINED"
    OTHER = "OTHER"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class OrderLine:
    product_id: str
    quantity: int
    unit_price: Money

    @property
    def amount(self) -> Money:
        return self.unit_price.times(self.quantity)


class Command:
    """Base of every command; `violations()` lists each malformed field."""

    def violations(self) -> list[FieldViolation]:
        raise NotImplementedError


@dataclass(frozen=True)
class RegisterCustomer(Command):
    customer_id: str
    display_name: str
    email: str
    credit_limit: Money

    def violations(self) -> list[FieldViolation]:
        found = id_violations("customer_id", self.customer_id)
        if not self.display_name.strip():
            found.append(FieldViolation("display_name", "must not be empty"))
        elif len(self.display_name) > MAX_NAME_LENGTH:
            found.append(FieldViolation("display_name", f"must be at most {MAX_NAME_LENGTH} characters"))
        if len(self.email) > MAX_EMAIL_LENGTH or not _EMAIL.match(self.email):
            found.append(FieldViolation("email", "must be an email address"))
        return found + money_violations("credit_limit", self.credit_limit, allow_zero=True)


@dataclass(frozen=True)
class ForgetCustomer(Command):
    """Erase the customer's personal data. Unconditional (no expected_version): forgetting must
    not fail because credit moved meanwhile."""

    customer_id: str

    def violations(self) -> list[FieldViolation]:
        return id_violations("customer_id", self.customer_id)


@dataclass(frozen=True)
class ReserveCredit(Command):
    customer_id: str
    expected_version: int
    amount: Money
    order_id: str

    def violations(self) -> list[FieldViolation]:
        return (
            id_violations("customer_id", self.customer_id)
            + version_violations(self.expected_version)
            + money_violations("amount", self.amount)
            + id_violations("order_id", self.order_id)
        )


@dataclass(frozen=True)
class ReleaseCredit(ReserveCredit):
    pass


@dataclass(frozen=True)
class AddStock(Command):
    product_id: str
    expected_version: int
    quantity: int

    def violations(self) -> list[FieldViolation]:
        found = id_violations("product_id", self.product_id)
        if self.expected_version < 0:
            found.append(FieldViolation("expected_version", "must be 0 (a new product) or more"))
        return found + quantity_violations("quantity", self.quantity, MAX_STOCK_QUANTITY)


@dataclass(frozen=True)
class ReserveStock(Command):
    product_id: str
    expected_version: int
    quantity: int
    order_id: str

    def violations(self) -> list[FieldViolation]:
        return (
            id_violations("product_id", self.product_id)
            + version_violations(self.expected_version)
            + quantity_violations("quantity", self.quantity, MAX_STOCK_QUANTITY)
            + id_violations("order_id", self.order_id)
        )


@dataclass(frozen=True)
class ReleaseStock(ReserveStock):
    pass


@dataclass(frozen=True)
class PlaceOrder(Command):
    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]

    @functools.cached_property
    def total(self) -> Money:
        """The sum of the lines' amounts (well-formed lines only: see violations)."""
        return order_total(self.lines)

    def violations(self) -> list[FieldViolation]:
        found = id_violations("order_id", self.order_id) + id_violations("customer_id", self.customer_id)
        if not self.lines:
            found.append(FieldViolation("lines", "an order needs at least one line"))
        elif len(self.lines) > MAX_LINES:
            found.append(FieldViolation("lines", f"at most {MAX_LINES} lines per order"))
            return found
        for i, line in enumerate(self.lines):
            found += id_violations(f"lines[{i}].product_id", line.product_id)
            found += quantity_violations(f"lines[{i}].quantity", line.quantity, MAX_QUANTITY)
            found += money_violations(f"lines[{i}].unit_price", line.unit_price)
        if len({line.unit_price.currency_code for line in self.lines}) > 1:
            found.append(FieldViolation("lines", "all lines must use one currency"))
        if not found and abs(self.total.units) > MAX_UNITS:
            found.append(FieldViolation("lines", "the order total is too large"))
        return found


@dataclass(frozen=True)
class ConfirmOrder(Command):
    order_id: str
    expected_version: int

    def violations(self) -> list[FieldViolation]:
        return id_violations("order_id", self.order_id) + version_violations(self.expected_version)


@dataclass(frozen=True)
class ShipOrder(ConfirmOrder):
    pass


@dataclass(frozen=True)
class CancelOrder(Command):
    order_id: str
    expected_version: int
    reason: CancellationReason | None
    note: str

    def violations(self) -> list[FieldViolation]:
        found = id_violations("order_id", self.order_id) + version_violations(self.expected_version)
        if self.reason is None:
            found.append(FieldViolation("reason", "must be one of the CancellationReason values"))
        if len(self.note) > MAX_NOTE_LENGTH:
            found.append(FieldViolation("note", f"must be at most {MAX_NOTE_LENGTH} characters"))
        return found


def order_total(lines: tuple[OrderLine, ...]) -> Money:
    total = Money.zero(lines[0].unit_price.currency_code)
    for line in lines:
        total = total + line.amount
    return total


def id_violations(field: str, value: str) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "must not be empty")]
    if not _ID.match(value):
        return [FieldViolation(field, "must be 1-64 letters, digits or _.:- and start with a letter or digit")]
    return []


def version_violations(expected_version: int) -> list[FieldViolation]:
    if expected_version < 1:
        return [FieldViolation("expected_version", "must be the aggregate's current version (1 or more)")]
    return []


def quantity_violations(field: str, quantity: int, maximum: int) -> list[FieldViolation]:
    if not 0 < quantity <= maximum:
        return [FieldViolation(field, f"must be between 1 and {maximum}")]
    return []
