"""Exact amounts and event times in the cheap forms the read models batch them in: money as an
integer count of nanos (proto Money's units and nanos, exactly) and times as integer microseconds
since the epoch (PostgreSQL's resolution). `select_json` turns both back into numeric and
timestamptz in SQL."""

from __future__ import annotations

from decimal import Decimal

from orders.v1 import events_pb2, types_pb2
from server.domain.money import NANOS_PER_UNIT


def nanos(money: types_pb2.Money) -> int:
    return money.units * NANOS_PER_UNIT + money.nanos


def nanos_of(amount: Decimal) -> int:
    """A numeric(38, 9) read back from the database, in nanos."""
    return int(amount.scaleb(9))


def nanos_text(value: int) -> str:
    """Nanos as a plain decimal string with nine places, as stored in JSON lines: '19.980000000'."""
    sign, value = ("-", -value) if value < 0 else ("", value)
    return f"{sign}{value // NANOS_PER_UNIT}.{value % NANOS_PER_UNIT:09d}"


def occurred(env: events_pb2.Envelope) -> int:
    """When the event happened, in microseconds since the epoch."""
    return env.occur_time.seconds * 1_000_000 + env.occur_time.nanos // 1000
