"""Exact money: an integer count of nanos (10^-9 units) and a currency. Never a float."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.domain.errors import FieldViolation

NANOS_PER_UNIT = 1_000_000_000
MAX_UNITS = 2**63 - 1
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Money:
    """An exact amount: `units` + `nanos`/10^9 of `currency_code`, as google.type.Money."""

    currency_code: str
    units: int
    nanos: int

    @classmethod
    def of_nanos(cls, currency_code: str, total_nanos: int) -> Money:
        units, nanos = divmod(abs(total_nanos), NANOS_PER_UNIT)
        sign = -1 if total_nanos < 0 else 1
        return cls(currency_code, sign * units, sign * nanos)

    @classmethod
    def zero(cls, currency_code: str) -> Money:
        return cls(currency_code, 0, 0)

    @property
    def total_nanos(self) -> int:
        return self.units * NANOS_PER_UNIT + self.nanos

    def times(self, quantity: int) -> Money:
        return Money.of_nanos(self.currency_code, self.total_nanos * quantity)

    def __add__(self, other: Money) -> Money:
        if other.currency_code != self.currency_code:
            raise ValueError("cannot add amounts in different currencies")
        return Money.of_nanos(self.currency_code, self.total_nanos + other.total_nanos)

    def __sub__(self, other: Money) -> Money:
        return self + Money.of_nanos(other.currency_code, -other.total_nanos)


def money_violations(field: str, money: Money, *, allow_zero: bool = False) -> list[FieldViolation]:
    """Everything wrong with an amount sent by a caller; an empty list when it is well formed."""
    violations = []
    if not _CURRENCY.match(money.currency_code):
        violations.append(FieldViolation(f"{field}.currency_code", "must be a 3-letter ISO 4217 code"))
    if not -NANOS_PER_UNIT < money.nanos < NANOS_PER_UNIT:
        violations.append(FieldViolation(f"{field}.nanos", "must be between -999999999 and 999999999"))
    elif (money.units > 0 and money.nanos < 0) or (money.units < 0 and money.nanos > 0):
        violations.append(FieldViolation(f"{field}.nanos", "must have the same sign as units"))
    elif money.total_nanos < 0 or (money.total_nanos == 0 and not allow_zero):
        violations.append(FieldViolation(field, "must be zero or more" if allow_zero else "must be greater than zero"))
    return violations
