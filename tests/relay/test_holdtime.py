"""The hold-time histogram: bounded error, exact extremes."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from skns.relay.holdtime import HoldTimes


@given(st.lists(st.integers(min_value=0, max_value=10**13), min_size=1, max_size=300))
def test_quantiles_are_within_two_percent_and_min_max_exact(values: list[int]) -> None:
    holds = HoldTimes()
    for v in values:
        holds.add(v)
    ordered = sorted(values)
    assert (holds.min, holds.max, holds.count) == (ordered[0], ordered[-1], len(values))
    for q in (0.5, 0.99):
        exact = ordered[max(1, round(q * len(ordered))) - 1]
        got = holds.quantile(q)
        assert got is not None
        assert abs(got - exact) <= max(1, exact * 0.02), (q, got, exact)


def test_small_values_are_exact() -> None:
    holds = HoldTimes()
    for v in range(64):
        holds.add(v)
    assert holds.quantile(0.5) == 31


def test_memory_is_fixed_whatever_the_count() -> None:
    holds = HoldTimes()
    size = len(holds.counts)
    rng = random.Random(1)
    for _ in range(20_000):
        holds.add(int(rng.expovariate(1e-5)))
    assert len(holds.counts) == size
    assert sum(holds.counts) == 20_000


def test_empty_summary_has_no_figures() -> None:
    assert HoldTimes().summary_us() == {
        "count": 0,
        "min_us": None,
        "p50_us": None,
        "p99_us": None,
        "max_us": None,
        "mean_us": None,
    }


def test_summary_is_in_microseconds() -> None:
    holds = HoldTimes()
    holds.add(5_000)
    summary = holds.summary_us()
    assert summary["min_us"] == summary["max_us"] == 5.0
    assert abs(summary["p50_us"] - 5.0) <= 0.1


@given(st.lists(st.integers(min_value=0, max_value=10**15), min_size=1, max_size=100))
def test_a_batch_records_the_same_as_one_by_one(values: list[int]) -> None:
    end = 10**15
    one, batch = HoldTimes(), HoldTimes()
    for v in values:
        one.add(end - v)
    batch.add_until(end, values)
    assert (batch.counts, batch.count, batch.total) == (one.counts, one.count, one.total)
    assert (batch.min, batch.max) == (one.min, one.max)
