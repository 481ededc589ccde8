"""Partition ownership's pure rules: the fair share, what to give back and what to try, each
subject in exactly one partition's filters; and what `orders up` gives several projectors."""

from __future__ import annotations

import random

import pytest

from projector import DURABLE, partitions
from server.config import ROLES, Settings
from server.devstack.embedded import nats_permissions
from server.devstack.supervisor import LocalStack
from server.platform import messaging


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, got = pattern.split("."), subject.split(".")
    for n, token in enumerate(want):
        if token == ">":
            return len(got) > n
        if n >= len(got) or (token != "*" and token != got[n]):
            return False
    return len(got) == len(want)


@pytest.mark.parametrize(("count", "members", "fair"), [(16, 1, 16), (16, 2, 8), (16, 3, 6), (16, 17, 1), (1, 2, 1)])
def test_the_fair_share_covers_every_partition(count: int, members: int, fair: int) -> None:
    assert partitions.share(count, members) == fair
    assert fair * members >= count


def test_partitions_above_the_share_are_given_back_highest_first() -> None:
    assert partitions.to_release({0, 3, 5, 9, 12}, 3) == [12, 9]
    assert partitions.to_release({1, 2}, 8) == []


def test_a_member_below_its_share_tries_every_partition_it_lacks_from_its_own_start() -> None:
    assert partitions.candidates({1}, 4, 2, start=3) == [3, 0, 2]
    assert partitions.candidates({1, 2}, 4, 2, start=0) == []


def test_every_event_subject_is_in_exactly_its_own_partitions_filters() -> None:
    rng = random.Random(5)
    for n in range(300):
        aggregate_id = f"o-{rng.getrandbits(64):x}" + (".dotted" if n % 10 == 0 else "")
        own = messaging.partition_of(aggregate_id, 16)
        for subject in (messaging.subject_for("t-1", "order", aggregate_id, 16),
                        f"{messaging.SUBJECT_PREFIX}.order.{own}.{aggregate_id.replace('.', '_')}"):  # before tenants led
            hits = [p for p in range(16) if any(matches(f, subject) for f in partitions.filter_subjects(p))]
            assert hits == [own], subject


def test_the_projectors_nats_user_may_use_each_partitions_consumer_and_not_the_sagas() -> None:
    allowed = nats_permissions("S", partitions=4)["orders-projector"]["publish"]["allow"]
    for p in range(4):
        assert f"$JS.API.CONSUMER.MSG.NEXT.S.{DURABLE}-p{p}" in allowed
    assert f"$JS.API.CONSUMER.MSG.NEXT.S.{DURABLE}-p4" not in allowed
    assert f"$JS.API.CONSUMER.DELETE.S.{DURABLE}" in allowed  # taking over from the single durable
    assert not any(".saga" in subject for subject in allowed)


def test_orders_up_runs_orders_projectors_each_on_a_metrics_port_of_its_own() -> None:
    settings = Settings.from_env({"ORDERS_PROJECTORS": "3", "ORDERS_COMMAND_SERVERS": "2",
                                  "ORDERS_METRICS_BASE_PORT": "9500"})
    stack = LocalStack(settings)
    assert stack.instances("projector") == 3 and stack.instances("relay") == 1
    ports = [stack.metrics_addr(role, n) for role in ROLES for n in range(stack.instances(role))]
    assert len(ports) == len(set(ports)) == len(ROLES) + 1 + 2
