"""Exact money for requests: `money("EUR", "9.99")` is Money(units=9, nanos=990000000)."""

from __future__ import annotations

from decimal import Decimal

from orders.v1 import types_pb2

_NANOS = Decimal(1_000_000_000)


def money(currency_code: str, amount: str | int | Decimal) -> types_pb2.Money:
    """`amount` as units and nanos (google.type.Money's rule: both carry the sign). A float is
    refused: it cannot hold most prices exactly."""
    if isinstance(amount, float):
        raise TypeError("pass the amount as a str, int or Decimal, not a float")
    value = Decimal(amount)
    nanos = value * _NANOS
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{amount} has more than nine decimal places")
    units = int(value)  # truncates toward zero, so units and nanos share the sign
    return types_pb2.Money(currency_code=currency_code, units=units, nanos=int(nanos - units * _NANOS))
