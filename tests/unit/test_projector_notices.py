"""Which view notices a committed batch answers itself, and which it must read back."""

from __future__ import annotations

from orders.v1 import events_pb2
from projector.notices import from_batch
from projector.store import Applied


def applied(order_id: str, version: int, stream_seq: int, kind: str, tenant_id: str = "t") -> Applied:
    env = events_pb2.Envelope(tenant_id=tenant_id, aggregate_type="order", aggregate_id=order_id,
                              aggregate_version=version)
    if kind == "order_placed":
        env.order_placed.customer_id = f"c-{order_id}"
    else:
        getattr(env, kind).order_id = order_id
    return Applied(env, stream_seq, {})


def test_an_order_placed_in_the_batch_is_told_from_it_at_its_last_change() -> None:
    batch = [applied("o-2", 1, 10, "order_placed"), applied("o-1", 1, 11, "order_placed"),
             applied("o-1", 2, 12, "order_confirmed")]
    last, told = from_batch(batch)
    assert last == {("t", "o-2"): batch[0], ("t", "o-1"): batch[2]}
    assert told == [("t", "o-1", "c-o-1", 2, 12), ("t", "o-2", "c-o-2", 1, 10)]


def test_an_order_placed_before_the_batch_is_left_to_the_read_back() -> None:
    batch = [applied("o-1", 2, 12, "order_shipped"), applied("o-2", 1, 13, "order_placed")]
    last, told = from_batch(batch)
    assert set(last) == {("t", "o-1"), ("t", "o-2")}
    assert told == [("t", "o-2", "c-o-2", 1, 13)]


def test_other_aggregates_tell_nothing() -> None:
    env = events_pb2.Envelope(tenant_id="t", aggregate_type="customer", aggregate_id="c-1", aggregate_version=1)
    env.customer_registered.customer_id = "c-1"
    assert from_batch([Applied(env, 1, {})]) == ({}, [])
