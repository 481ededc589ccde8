"""The chaos checker judges histories it is handed: each invariant is shown to catch what breaks it."""

from __future__ import annotations

from tests.chaos.checker import Event, Observed, Row, check
from tests.chaos.history import FAIL, INFO, INVOKE, NEMESIS, OK, Op, around

PLACED = Row(1, "PLACED", "10.000000000")
CONFIRMED = Row(2, "CONFIRMED", "10.000000000")


def calls(order_id: str = "o-1") -> list[Op]:
    """A placed order, then a confirmation whose first send's answer was lost (info), resent."""
    return [
        Op(INVOKE, "place", order_id=order_id, request_id="r-1"),
        Op(OK, "place", order_id=order_id, request_id="r-1", version=1, total="10.000000000", response="0a"),
        Op(NEMESIS, "kill", detail="command-server"),
        Op(INVOKE, "confirm", order_id=order_id, request_id="r-2", expected_version=1),
        Op(INFO, "confirm", order_id=order_id, request_id="r-2", expected_version=1, code="UNAVAILABLE"),
        Op(INVOKE, "confirm", order_id=order_id, request_id="r-2", expected_version=1),
        Op(OK, "confirm", order_id=order_id, request_id="r-2", version=2, response="0b"),
    ]


def healthy(**changes: object) -> Observed:
    seen = Observed(
        orders={"o-1": CONFIRMED},
        events={"o-1": [Event(1, "r-1", True), Event(2, "r-2", True)]},
        responses={"r-1": b"\x0a", "r-2": b"\x0b"},
        stream={"o-1": [1, 2]},
        read_model={"o-1": CONFIRMED},
    )
    for name, value in changes.items():
        setattr(seen, name, value)
    return seen


def broken(seen: Observed, ops: list[Op] | None = None) -> set[str]:
    report = check(calls() if ops is None else ops, seen)
    return {invariant for invariant, found in report.violations.items() if found}


def test_a_consistent_run_is_valid() -> None:
    report = check(calls(), healthy())
    assert report.valid, report.summary()
    assert report.counts == {"ok": 2, "info": 1}
    assert report.faults == {"kill": 1}


def test_an_acknowledged_write_missing_is_lost() -> None:
    assert broken(healthy(events={"o-1": [Event(1, "r-1", True)]}, orders={"o-1": PLACED},
                          stream={"o-1": [1]}, read_model={"o-1": PLACED})) == {"G1"}


def test_a_placed_order_with_another_total_is_lost() -> None:
    changed = Row(2, "CONFIRMED", "11.000000000")
    assert broken(healthy(orders={"o-1": changed}, read_model={"o-1": changed})) == {"G1"}


def test_an_order_no_client_placed_is_unexpected() -> None:
    seen = healthy()
    seen.orders["o-9"] = PLACED
    seen.events["o-9"] = [Event(1, "r-9", True)]
    seen.stream["o-9"] = [1]
    seen.read_model["o-9"] = PLACED
    assert broken(seen) == {"G2"}


def test_two_effects_of_one_request_id_are_duplicates() -> None:
    seen = healthy(orders={"o-1": Row(3, "CONFIRMED", "10.000000000")},
                   events={"o-1": [Event(1, "r-1", True), Event(2, "r-2", True), Event(3, "r-2", True)]},
                   stream={"o-1": [1, 2, 3]}, read_model={"o-1": Row(3, "CONFIRMED", "10.000000000")})
    assert broken(seen) == {"G3"}


def test_a_replay_answering_differently_breaks_g3() -> None:
    ops = calls() + [Op(INVOKE, "confirm", order_id="o-1", request_id="r-2"),
                     Op(OK, "confirm", order_id="o-1", request_id="r-2", version=2, response="0c")]
    assert broken(healthy(), ops) == {"G3"}


def test_a_refused_call_that_took_effect_breaks_g3() -> None:
    ops = calls()[:-1] + [Op(FAIL, "confirm", order_id="o-1", request_id="r-2", code="ABORTED")]
    assert broken(healthy(), ops) == {"G3"}


def test_an_unpublished_event_breaks_g4() -> None:
    assert broken(healthy(events={"o-1": [Event(1, "r-1", True), Event(2, "r-2", False)]})) == {"G4"}


def test_a_stream_missing_or_reordering_a_version_breaks_g5() -> None:
    assert broken(healthy(stream={"o-1": [1]})) == {"G5"}
    assert broken(healthy(stream={"o-1": [2, 1]})) == {"G5"}
    assert broken(healthy(stream={"o-1": [1, 2, 2]})) == {"G5"}


def test_a_read_model_behind_or_ahead_breaks_g6() -> None:
    assert broken(healthy(read_model={"o-1": PLACED})) == {"G6"}
    assert broken(healthy(read_model={"o-1": CONFIRMED, "o-2": PLACED})) == {"G6"}


def test_regressions_and_resource_findings_break_g7_and_g8() -> None:
    assert broken(healthy(regressions=["o-1: read model went from version 2 to 1"])) == {"G7"}
    assert broken(healthy(resources=["fds relay: 90 after the run, 15 under load before it (limit 24)"])) == {"G8"}


def test_the_slice_shown_for_an_order_holds_its_calls_and_the_faults_around_them() -> None:
    ops = [Op(NEMESIS, "pause", detail="relay"), *calls("o-2"), *calls("o-1")]
    shown = list(around(ops, "o-1"))
    assert [op.order_id for op in shown if op.type != NEMESIS] == ["o-1"] * 6
    assert [op.f for op in shown if op.type == NEMESIS] == ["pause", "kill", "kill"]
