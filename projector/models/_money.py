"""Exact amounts from proto Money, shared by the read models."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from orders.v1 import events_pb2, types_pb2


def amount(money: types_pb2.Money) -> Decimal:
    return Decimal(money.units * 1_000_000_000 + money.nanos).scaleb(-9)


def occurred(env: events_pb2.Envelope) -> dt.datetime:
    return env.occur_time.ToDatetime(dt.UTC)
