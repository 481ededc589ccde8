"""The projector's per-event rules, decided in memory: apply v only on top of v-1, drop
duplicates, hold gaps, park what cannot be applied and everything of its aggregate behind it."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from orders.v1 import events_pb2, types_pb2
from projector.decide import Incoming, Outcome, decide, key_from_subject
from projector.models import rows_json
from projector.models._money import nanos_of, nanos_text, occurred
from projector.models.product_sales import stored, sums

SUBJECT = "orders.events.order.3.o-1"


def event(version: int, order_id: str = "o-1") -> Incoming:
    env = events_pb2.Envelope(tenant_id="t", aggregate_type="order", aggregate_id=order_id, aggregate_version=version)
    env.order_confirmed.order_id = order_id
    return Incoming(version * 10, f"orders.events.order.3.{order_id}", env.SerializeToString())


def plan(env: events_pb2.Envelope) -> None:
    """Every event may be applied."""


def outcomes(items: list[Incoming], applied: dict | None = None, parked: set | None = None, max_gap: int = 5) -> list[Outcome]:
    applied = {} if applied is None else applied
    return [d.outcome for d in decide(items, applied, parked or set(), plan, max_gap)]


def test_a_batch_applies_consecutive_versions_and_drops_repeats() -> None:
    assert outcomes([event(1), event(2), event(2), event(1)]) == [
        Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.DUPLICATE]


def test_a_version_beyond_the_next_waits_and_applies_once_the_gap_fills() -> None:
    applied: dict = {}
    assert outcomes([event(3), event(1), event(2)], applied) == [Outcome.GAP, Outcome.APPLIED, Outcome.APPLIED]
    assert outcomes([event(3)], applied) == [Outcome.APPLIED]


def test_a_gap_that_never_fills_becomes_a_dead_letter_and_parks_its_aggregate_only() -> None:
    late = Incoming(30, SUBJECT, event(3).data, num_delivered=5)
    assert outcomes([late, event(1), event(1, "o-2")], max_gap=5) == [Outcome.DEAD, Outcome.DEAD, Outcome.APPLIED]


def test_garbage_and_unknown_payloads_are_dead_letters_keyed_by_their_subject() -> None:
    garbage = Incoming(1, SUBJECT, b"\xff\xff\xff")
    empty = Incoming(2, SUBJECT, events_pb2.Envelope(aggregate_id="o-1", aggregate_version=1).SerializeToString())
    decisions = decide([garbage, empty], {}, set(), plan, 5)
    assert [(d.outcome, d.reason, d.key) for d in decisions] == [
        (Outcome.DEAD, "undecodable", ("", "order", "o-1")), (Outcome.DEAD, "unknown_type", ("", "order", "o-1"))]


def test_a_failing_handler_parks_its_event_and_the_next_of_its_aggregate() -> None:
    def broken(env: events_pb2.Envelope) -> None:
        raise ValueError("bug")

    decisions = decide([event(1), event(2)], {}, set(), broken, 5)
    assert [(d.outcome, d.reason) for d in decisions] == [(Outcome.DEAD, "handler_failed"), (Outcome.DEAD, "parked_behind")]


def test_duplicates_of_a_parked_aggregate_are_still_just_duplicates() -> None:
    assert outcomes([event(1), event(2)], {("t", "order", "o-1"): 1}, {("order", "o-1")}) == [
        Outcome.DUPLICATE, Outcome.DEAD]


def test_subjects_name_the_aggregate_or_fall_back_to_unknown() -> None:
    assert key_from_subject("orders.events.order.3.o-9") == ("", "order", "o-9")
    assert key_from_subject("elsewhere") == ("", "unknown", "elsewhere")


def test_product_sales_sums_lines_per_product_so_one_upsert_touches_a_row_once() -> None:
    price = types_pb2.Money(currency_code="EUR", units=2, nanos=500_000_000)
    placed = events_pb2.OrderPlaced(lines=[types_pb2.OrderLine(product_id="p", quantity=2, unit_price=price),
                                           types_pb2.OrderLine(product_id="p", quantity=1, unit_price=price)])
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
