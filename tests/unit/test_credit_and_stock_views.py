"""What the customer_credit, product_stock and order_summaries apply functions gather from a
batch before it is written: one signed sum per customer or product with the last version, and a
cancellation's reason and note."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orders.v1 import events_pb2, types_pb2
from projector.views import customer_credit, order_summaries, product_stock


def envelope(aggregate_id: str, version: int, **payload: Any) -> events_pb2.Envelope:
    env = events_pb2.Envelope(tenant_id="t", aggregate_id=aggregate_id, aggregate_version=version, **payload)
    env.occur_time.FromSeconds(1_700_000_000 + version)
    return env


def eur(units: int, nanos_: int = 0) -> types_pb2.Money:
    return types_pb2.Money(currency_code="EUR", units=units, nanos=nanos_)


def test_a_batch_of_reservations_and_releases_is_one_signed_sum_at_the_last_version() -> None:
    changes = customer_credit.Changes()
    customer_credit.customer_registered(changes, envelope(
        "c", 1, customer_registered=events_pb2.CustomerRegistered(customer_id="c", credit_limit=eur(100))), 1)
    customer_credit.credit_reserved(changes, envelope(
        "c", 2, credit_reserved=events_pb2.CreditReserved(customer_id="c", amount=eur(30, 500_000_000))), 2)
    customer_credit.credit_released(changes, envelope(
        "c", 3, credit_released=events_pb2.CreditReleased(customer_id="c", amount=eur(10))), 3)

    assert changes.registered[("t", "c")][:3] == ("EUR", 100 * 10**9, 1)
    moved = changes.moved[("t", "c")]
    assert (moved.reserved, moved.version) == (20_500_000_000, 3)


def test_stock_added_reserved_and_released_sum_per_product_at_the_last_version() -> None:
    changes = product_stock.Changes()
    product_stock.stock_added(changes, envelope("p", 1, stock_added=events_pb2.StockAdded(quantity=10)), 1)
    product_stock.stock_reserved(changes, envelope("p", 2, stock_reserved=events_pb2.StockReserved(quantity=4)), 2)
    product_stock.stock_released(changes, envelope("p", 3, stock_released=events_pb2.StockReleased(quantity=1)), 3)
    product_stock.stock_added(changes, envelope("q", 7, stock_added=events_pb2.StockAdded(quantity=2)), 4)

    p, q = changes.moved[("t", "p")], changes.moved[("t", "q")]
    assert (p.on_hand, p.reserved, p.version) == (10, 3, 3)
    assert (q.on_hand, q.reserved, q.version) == (2, 0, 7)


def test_a_cancellation_carries_its_reason_and_note_and_other_moves_clear_them() -> None:
    changes = order_summaries.Changes()
    order_summaries.order_cancelled(changes, envelope("o", 2, order_cancelled=events_pb2.OrderCancelled(
        reason=types_pb2.CANCELLATION_REASON_OUT_OF_STOCK, note="p-1 short by 2")), 9)
    assert changes.moved[("t", "o")][0] == "CANCELLED"
    assert changes.moved[("t", "o")][4:] == ("OUT_OF_STOCK", "p-1 short by 2")

    order_summaries.MODEL.handlers["order_confirmed"](changes, envelope("x", 2), 10)
    assert changes.moved[("t", "x")][4:] == ("", "")


@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_a_reason_round_trips_through_its_stored_name_even_one_this_contract_does_not_know(reason: int) -> None:
    assert order_summaries.reason_number(order_summaries.reason_name(reason)) == reason


def test_a_known_reason_is_stored_by_name() -> None:
    assert order_summaries.reason_name(types_pb2.CANCELLATION_REASON_CREDIT_DECLINED) == "CREDIT_DECLINED"
    assert order_summaries.reason_number("") == types_pb2.CANCELLATION_REASON_UNSPECIFIED
