"""skns.ratelimit: the first of a key at once, then one per interval with the count held back."""

from __future__ import annotations

from skns.ratelimit import RateGate


def test_first_at_once_then_one_per_interval_per_key_with_the_count_held_back() -> None:
    now = [100.0]
    gate = RateGate(10.0, clock=lambda: now[0])
    assert gate.allow("a") == 0
    assert gate.allow("b") == 0  # keys are independent
    assert [gate.allow("a") for _ in range(3)] == [None, None, None]
    now[0] += 9.9
    assert gate.allow("a") is None
    now[0] += 0.1
    assert gate.allow("a") == 4  # the four held back since the last one let through
    assert gate.allow("a") is None
    now[0] += 10
    assert gate.allow("a") == 1
    assert gate.allow("b") == 0
