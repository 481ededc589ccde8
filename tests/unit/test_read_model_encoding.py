"""How read-model rows travel to PostgreSQL: lines summed per product, amounts as exact nanos,
times in whole microseconds, and batches as JSON that round-trips whatever the values."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from orders.v1 import events_pb2, types_pb2
from projector.views._money import nanos_of, nanos_text, occurred
from projector.views.base import rows_json
from projector.views.product_sales import stored, sums


def test_product_sales_sums_lines_per_product_so_one_upsert_touches_a_row_once() -> None:
    price = types_pb2.Money(currency_code="EUR", units=2, nanos=500_000_000)
    placed = events_pb2.OrderPlaced(lines=[types_pb2.OrderLine(product_id="p", quantity=2, unit_price=price),
                                           types_pb2.OrderLine(product_id="p", quantity=1, unit_price=price)],
                                    line_totals=[types_pb2.Money(currency_code="EUR", units=5),
                                                 types_pb2.Money(currency_code="EUR", units=2, nanos=500_000_000)])
    assert stored(sums(placed)) == [{"product_id": "p", "currency_code": "EUR", "units": "3", "revenue": "7.500000000"}]


@given(st.integers(min_value=-(10**20), max_value=10**20))
def test_batched_amounts_round_trip_exactly_through_their_text(value: int) -> None:
    assert nanos_of(Decimal(nanos_text(value))) == value
    assert Decimal(nanos_text(value)) == Decimal(value).scaleb(-9)


def test_event_times_are_batched_in_whole_microseconds() -> None:
    env = events_pb2.Envelope()
    env.occur_time.FromDatetime(dt.datetime(2026, 11, 27, 9, 30, 0, 123456, tzinfo=dt.UTC))
    assert occurred(env) == int(dt.datetime(2026, 11, 27, 9, 30, 0, 123456, tzinfo=dt.UTC).timestamp()) * 10**6 + 123456


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**100), max_value=2**100) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.lists(st.lists(json_values, max_size=6), max_size=5))
def test_rows_travel_as_json_exactly_whatever_their_values(rows: list[list[object]]) -> None:
    # Amounts in nanos pass 64 bits above nine billion units; text may be anything.
    assert json.loads(rows_json(iter(rows))) == rows
