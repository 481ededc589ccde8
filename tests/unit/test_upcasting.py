"""Event schema evolution: events written by the code before OrderPlaced's version 2 (the recorded
fixture) read exactly like the events the command side writes now, wherever they are read."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from nats.aio.msg import Msg

from orders.v1 import events_pb2, types_pb2
from projector.decide import UNKNOWN_SCHEMA_VERSION, Incoming, Outcome, decide, no_check
from projector.views.product_sales import sums
from server.domain import events as e
from server.domain.commands import OrderLine
from server.domain.money import Money
from server.platform import upcasting, wire
from server.saga.runner import concerning
from tests.e2e.history import FIXTURE_TENANT, envelopes

CTX = wire.EventContext(tenant_id="t-1", correlation_id="corr", causation_id="cause", actor="someone", request_id="r-1")


def domain_money(m: types_pb2.Money) -> Money:
    return Money(m.currency_code, m.units, m.nanos)


def placed_as_written_now(old: events_pb2.Envelope) -> events_pb2.Envelope:
    """The same OrderPlaced as the command side writes it today, from the domain event."""
    p = old.order_placed
    event = e.OrderPlaced(p.order_id, p.customer_id,
                          tuple(OrderLine(x.product_id, x.quantity, domain_money(x.unit_price)) for x in p.lines),
                          domain_money(p.total))
    return wire.envelope(event, CTX, "order", old.aggregate_id, old.aggregate_version, uuid.UUID(old.event_id))


def old_placed() -> list[events_pb2.Envelope]:
    return [env for env in envelopes() if env.WhichOneof("payload") == "order_placed"]


def test_the_fixture_holds_version_1_events_written_before_line_totals() -> None:
    recorded = envelopes()
    assert len(recorded) == 24 and {env.tenant_id for env in recorded} == {FIXTURE_TENANT}
    assert {env.schema_version for env in recorded} == {1}
    assert len(old_placed()) == 5 and all(not env.order_placed.line_totals for env in old_placed())


def test_the_command_side_writes_order_placed_as_version_2_with_every_line_total() -> None:
    lines = (OrderLine("p-1", 3, Money("EUR", 4, 200_000_000)), OrderLine("p-2", 1_000_000, Money("EUR", 0, 1)))
    env = wire.envelope(e.OrderPlaced("o-1", "c-1", lines, Money("EUR", 12, 601_000_000)), CTX, "order", "o-1", 1,
                        uuid.uuid4())
    assert env.schema_version == 2
    assert list(env.order_placed.line_totals) == [types_pb2.Money(currency_code="EUR", units=12, nanos=600_000_000),
                                                  types_pb2.Money(currency_code="EUR", nanos=1_000_000)]
    confirmed = wire.envelope(e.OrderConfirmed("o-1"), CTX, "order", "o-1", 2, uuid.uuid4())
    assert confirmed.schema_version == 1  # events that never changed stay at 1


def test_an_old_order_placed_upcasts_to_exactly_what_the_command_side_writes_now() -> None:
    for old in old_placed():
        new = placed_as_written_now(old)
        upcast = upcasting.parse(old.SerializeToString())
        assert upcast.schema_version == new.schema_version == 2
        assert upcast.order_placed == new.order_placed
        totals = sum(m.units * 10**9 + m.nanos for m in upcast.order_placed.line_totals)
        assert totals == upcast.order_placed.total.units * 10**9 + upcast.order_placed.total.nanos


def test_upcasting_the_newest_form_changes_nothing() -> None:
    new = placed_as_written_now(old_placed()[0])
    assert upcasting.parse(new.SerializeToString()) == new


def test_every_event_written_at_an_older_version_has_an_upcaster_to_the_next() -> None:
    payloads = {f.name for f in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields}
    assert set(upcasting.CURRENT) <= payloads
    for payload, newest in upcasting.CURRENT.items():
        for version in range(1, newest):
            assert (payload, version) in upcasting.UPCASTERS


def test_an_event_newer_than_the_reader_is_refused_rather_than_read_as_an_older_one() -> None:
    env = placed_as_written_now(old_placed()[0])
    env.schema_version = 3
    with pytest.raises(upcasting.UnknownSchemaVersionError):
        upcasting.parse(env.SerializeToString())


def test_the_projector_parks_an_event_of_an_unknown_version_and_whatever_follows_it() -> None:
    first = placed_as_written_now(old_placed()[0])
    first.schema_version = 3
    second = events_pb2.Envelope(event_id=str(uuid.uuid4()), tenant_id=CTX.tenant_id, aggregate_type="order",
                                 aggregate_id=first.aggregate_id, aggregate_version=2,
                                 order_confirmed=events_pb2.OrderConfirmed(order_id=first.aggregate_id))
    subject = f"orders.events.{CTX.tenant_id}.order.1.{first.aggregate_id}"
    items = [Incoming(1, subject, first.SerializeToString()), Incoming(2, subject, second.SerializeToString())]

    decisions = decide(items, {}, set(), no_check, max_gap_deliveries=30)

    assert [(d.outcome, d.reason) for d in decisions] == [(Outcome.DEAD, UNKNOWN_SCHEMA_VERSION),
                                                          (Outcome.DEAD, "parked_behind")]


def test_the_projector_applies_old_events_in_their_newest_form() -> None:
    old = old_placed()[0]
    subject = f"orders.events.{old.tenant_id}.order.1.{old.aggregate_id}"
    [decision] = decide([Incoming(1, subject, old.SerializeToString())], {}, set(), no_check, max_gap_deliveries=30)
    assert decision.outcome is Outcome.APPLIED and decision.envelope is not None
    assert decision.envelope.order_placed == placed_as_written_now(old).order_placed
    assert sums(decision.envelope.order_placed) == sums(placed_as_written_now(old).order_placed)


def test_a_line_without_its_total_is_a_malformed_event_not_zero_revenue() -> None:
    placed = placed_as_written_now(old_placed()[0]).order_placed
    del placed.line_totals[-1]
    with pytest.raises(ValueError):
        sums(placed)


def test_the_saga_reads_old_events_in_their_newest_form() -> None:
    old = old_placed()[0]
    msg = Msg(cast(Any, None), subject="orders.events.legacy.order.1.o-1", data=old.SerializeToString())
    env, event = concerning(msg)
    assert env is not None and event is not None and event.payload == "order_placed"
    assert event.envelope.order_placed == placed_as_written_now(old).order_placed
