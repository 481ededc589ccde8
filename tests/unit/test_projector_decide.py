"""The projector's per-event rules, decided in memory: apply v only on top of v-1, drop
duplicates, hold gaps, park what cannot be applied and everything of its aggregate behind it."""

from __future__ import annotations

import pytest

from orders.v1 import events_pb2
from projector.decide import TENANT_INVALID, Incoming, Key, Outcome, decide, key_from_subject

SUBJECT = "orders.events.t.order.3.o-1"


def event(version: int, order_id: str = "o-1", tenant_id: str = "t", subject_tenant: str | None = None) -> Incoming:
    env = events_pb2.Envelope(tenant_id=tenant_id, aggregate_type="order", aggregate_id=order_id,
                              aggregate_version=version)
    env.order_confirmed.order_id = order_id
    subject_tenant = tenant_id if subject_tenant is None else subject_tenant
    return Incoming(version * 10, f"orders.events.{subject_tenant}.order.3.{order_id}", env.SerializeToString())


def plan(env: events_pb2.Envelope) -> None:
    """Every event may be applied."""


def outcomes(items: list[Incoming], applied: dict[Key, int] | None = None, parked: set[Key] | None = None, max_gap: int = 5) -> list[Outcome]:
    applied = {} if applied is None else applied
    return [d.outcome for d in decide(items, applied, parked or set(), plan, max_gap)]


def test_a_batch_applies_consecutive_versions_and_drops_repeats() -> None:
    assert outcomes([event(1), event(2), event(2), event(1)]) == [
        Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.DUPLICATE]


def test_a_version_beyond_the_next_waits_and_applies_once_the_gap_fills() -> None:
    applied: dict[Key, int] = {}
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
        (Outcome.DEAD, "undecodable", ("t", "order", "o-1")), (Outcome.DEAD, "unknown_type", ("t", "order", "o-1"))]


def test_a_failing_handler_parks_its_event_and_the_next_of_its_aggregate() -> None:
    def broken(env: events_pb2.Envelope) -> None:
        raise ValueError("bug")

    decisions = decide([event(1), event(2)], {}, set(), broken, 5)
    assert [(d.outcome, d.reason) for d in decisions] == [(Outcome.DEAD, "handler_failed"), (Outcome.DEAD, "parked_behind")]


def test_duplicates_of_a_parked_aggregate_are_still_just_duplicates() -> None:
    assert outcomes([event(1), event(2)], {("t", "order", "o-1"): 1}, {("t", "order", "o-1")}) == [
        Outcome.DUPLICATE, Outcome.DEAD]


def test_garbage_on_one_tenants_order_parks_that_order_and_not_another_tenants_with_the_same_id() -> None:
    garbage = Incoming(1, "orders.events.a.order.3.o-1", b"\xff\xff\xff")
    decisions = decide([garbage, event(1, tenant_id="b"), event(1, tenant_id="a")], {}, set(), plan, 5)
    assert [(d.outcome, d.reason, d.key) for d in decisions] == [
        (Outcome.DEAD, "undecodable", ("a", "order", "o-1")),
        (Outcome.APPLIED, "", ("b", "order", "o-1")),
        (Outcome.DEAD, "parked_behind", ("a", "order", "o-1")),
    ]


@pytest.mark.parametrize("tenant_id", ["", "../x", "a.b", "a" * 65, "caf\u00e9", "a b"])
def test_an_event_whose_tenant_is_no_valid_tenant_id_is_a_dead_letter_and_parks_nothing(tenant_id: str) -> None:
    decisions = decide([event(1, tenant_id=tenant_id, subject_tenant="t"), event(1)], {}, set(), plan, 5)
    assert [(d.outcome, d.reason) for d in decisions] == [(Outcome.DEAD, TENANT_INVALID), (Outcome.APPLIED, "")]
    assert decisions[0].envelope is not None and decisions[0].envelope.tenant_id == tenant_id


def test_an_event_on_another_tenants_subject_is_a_dead_letter() -> None:
    [decision] = decide([event(1, tenant_id="a", subject_tenant="b")], {}, set(), plan, 5)
    assert (decision.outcome, decision.reason) == (Outcome.DEAD, TENANT_INVALID)
    assert "subject" in decision.error


def test_an_event_on_a_subject_of_the_layout_before_tenants_led_applies_by_its_envelope() -> None:
    env = events_pb2.Envelope.FromString(event(1, tenant_id="a").data)
    [decision] = decide([Incoming(1, "orders.events.order.3.o-1", env.SerializeToString())], {}, set(), plan, 5)
    assert (decision.outcome, decision.key) == (Outcome.APPLIED, ("a", "order", "o-1"))


def test_subjects_name_the_tenant_and_aggregate_or_fall_back_to_unknown() -> None:
    assert key_from_subject("orders.events.t-1.order.3.o-9") == ("t-1", "order", "o-9")
    assert key_from_subject("orders.events.t-1.order.3.o.9.x") == ("t-1", "order", "o.9.x")
    # The layout before tenants led: no tenant, so it parks no tenant's aggregate.
    assert key_from_subject("orders.events.order.3.o-9") == ("", "order", "o-9")
    assert key_from_subject("orders.events.order.3.7.x") == ("", "order", "7.x")
    assert key_from_subject("elsewhere") == ("", "unknown", "elsewhere")
