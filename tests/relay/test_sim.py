"""The simulator's plan: what the source sends, and the sink's bookkeeping."""

from __future__ import annotations

import asyncio
import collections

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_refuses_plain_http
from skns.relay.sim import Simulator, Source, SourcePlan, text_frame


@settings(max_examples=30)
@given(
    count=st.integers(min_value=1, max_value=500),
    window=st.integers(min_value=1, max_value=50),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_every_id_once_each_within_its_window(count: int, window: int, seed: int) -> None:
    plan = SourcePlan(count=count, start=100, window=window, late=0.0, seed=seed)
    ids = [id_ for _, _, id_ in plan.schedule()]
    assert sorted(ids) == list(range(100, 100 + count))
    for position, id_ in enumerate(ids):
        assert abs((id_ - 100) - position) <= window


def test_window_one_is_in_order() -> None:
    ids = [id_ for _, _, id_ in SourcePlan(count=1000, window=1, late=0.0).schedule()]
    assert ids == list(range(1000))


def test_late_duplicates_and_drops_come_in_about_the_asked_proportions() -> None:
    plan = SourcePlan(count=20_000, late=0.1, duplicates=0.05, drops=0.02, delay_ms=2, seed=1)
    schedule = plan.schedule()
    times = collections.Counter(id_ for _, _, id_ in schedule)
    distinct = len(times)
    assert 0.97 * 20_000 < distinct < 0.99 * 20_000  # ~2 % dropped
    twice = sum(1 for n in times.values() if n == 2)
    assert 0.04 * distinct < twice < 0.06 * distinct
    late = sum(1 for _, delay, _ in schedule if delay > 0)
    assert 0.13 * distinct < late < 0.17 * distinct  # 10 % late, plus the duplicates
    assert all(delay < 0.2 for _, delay, _ in schedule)


def test_rate_spaces_the_frames() -> None:
    schedule = SourcePlan(count=100, rate=1000, window=1, late=0).schedule()
    assert schedule[-1][0] == pytest.approx(0.099)


def test_frames_carry_id_and_text() -> None:
    (frame,) = SourcePlan(count=1, start=7).frames()
    assert frame[2] == 7 and frame[3].startswith(b'{"id":7,"text":')


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frame_lengths(size: int) -> None:
    wire = text_frame(b"x" * size)
    assert wire[0] == 0x81
    assert wire.endswith(b"x" * size)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(wire) == header + size


@pytest.mark.parametrize(
    "bad", [{"count": 0}, {"window": 0}, {"delay": "normal"}, {"late": 2.0}, {"rate": -1}]
)
def test_bad_plans_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SourcePlan(**bad)


def test_plain_http_gets_a_clear_refusal() -> None:
    async def main() -> None:
        async with Simulator(Source([])) as sim:
            await asyncio.to_thread(assert_refuses_plain_http, sim.port)

    uvloop.run(main())
