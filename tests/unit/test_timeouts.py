"""The statement timeout a call's remaining deadline gives its statements (commands and reads)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.platform.timeouts import timeout_step


@given(st.floats(min_value=2, max_value=10**9))
def test_the_timeout_stays_within_the_budget_and_uses_most_of_it(budget_ms: float) -> None:
    step = timeout_step(budget_ms)
    assert 0.84 * budget_ms - 1 <= step <= budget_ms


@given(st.floats(min_value=0, max_value=10**7), st.floats(min_value=0, max_value=10**7))
def test_a_longer_budget_never_gets_a_shorter_timeout(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 1 <= timeout_step(low) <= timeout_step(high)


def test_calls_with_the_default_deadline_share_one_value() -> None:
    # A pooled connection then keeps it, and a creation writes without setting it first.
    assert len({timeout_step(10_000 - elapsed) for elapsed in range(0, 200, 7)}) == 1
