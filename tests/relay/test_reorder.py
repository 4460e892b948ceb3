"""The reorder buffer against a reference that sorts, with hypothesis choosing the arrivals."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skns.relay.reorder import BELOW_SENT, BELOW_START, DUPLICATE, OUTLIER_RUN, ReorderBuffer

# Arrivals: ids out of a small range (so duplicates and gaps are common), in any order.
arrivals = st.lists(st.integers(min_value=0, max_value=60), max_size=200)


def feed(buffer: ReorderBuffer[int], ids: list[int], step: float = 1.0) -> list[int]:
    """Push each id (as its own item) at times 0, step, 2*step ...; return what came out."""
    out: list[int] = []
    for n, id_ in enumerate(ids):
        now = n * step
        out.extend(buffer.expire(now))
        result = buffer.push(id_, id_, now)
        if isinstance(result, list):
            out.extend(result)
    return out


def contiguous_prefix(ids: list[int], first: int) -> list[int]:
    """The reference: sort the distinct ids and keep the run that starts at ``first``."""
    present = set(ids)
    run = []
    while first in present:
        run.append(first)
        first += 1
    return run


@given(arrivals)
def test_any_order_without_timeout_releases_the_sorted_contiguous_run(ids: list[int]) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0)
    out = feed(buffer, ids)
    assert out == contiguous_prefix(ids, 0)
    # Everything else is held: the distinct ids beyond the first gap.
    assert len(buffer) == len(set(ids)) - len(out)
    assert buffer.released == len(out)
    assert buffer.skipped == 0
    # Every push is released, held, or dropped as a duplicate / below-sent, exactly once.
    assert buffer.released + len(buffer) + buffer.duplicates + buffer.below_sent == len(ids)


@given(arrivals)
def test_drain_releases_everything_distinct_in_sorted_order(ids: list[int]) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0)
    out = feed(buffer, ids)
    out.extend(buffer.drain())
    assert out == sorted(set(ids))
    assert len(buffer) == 0
    assert buffer.skipped == (max(ids) + 1 - len(out) if ids else 0)


@given(arrivals, st.integers(min_value=1, max_value=10), st.floats(min_value=0.1, max_value=5))
def test_gap_timeout_skips_are_counted_and_the_output_stays_sorted(
    ids: list[int], timeout: int, step: float
) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0, gap_timeout=timeout)
    out = feed(buffer, ids, step)
    assert all(a < b for a, b in itertools.pairwise(out)), "not strictly increasing"
    assert set(out) <= set(ids)
    # next_id covers what came out and what was skipped, nothing else.
    assert buffer.next_id == (out[-1] + 1 if out else 0)
    assert buffer.skipped == buffer.next_id - len(out)
    # A skipped id that arrives later is dropped as below-sent, never released.
    assert buffer.released + len(buffer) + buffer.duplicates + buffer.below_sent == len(ids)
    # Nothing held waits past its deadline once time moves on.
    if len(buffer):
        assert buffer.deadline is not None


@given(arrivals, st.integers(min_value=1, max_value=8))
def test_limit_bounds_what_is_held_and_skips_the_oldest_gap(ids: list[int], limit: int) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0, limit=limit)
    out: list[int] = []
    for id_ in ids:
        result = buffer.push(id_, id_, 0)
        if isinstance(result, list):
            out.extend(result)
        assert len(buffer) <= limit
    assert all(a < b for a, b in itertools.pairwise(out))
    assert buffer.skipped == buffer.next_id - len(out)


@given(arrivals)
def test_learned_first_id_is_the_lowest_seen_while_settling(ids: list[int]) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(None, settle=10)
    out: list[int] = []
    for id_ in ids:  # all within the settle time
        result = buffer.push(id_, id_, 1)
        assert result in ([], DUPLICATE)
    out.extend(buffer.expire(11))
    out.extend(buffer.expire(21))  # the second settle, given to outliers
    if not ids:
        assert out == [] and buffer.next_id is None
        return
    # The lowest id starts, unless strays below the run were dropped as outliers.
    distinct = sorted(set(ids))
    dropped = distinct[: buffer.outliers]
    assert buffer.start == distinct[buffer.outliers]
    assert out == contiguous_prefix(ids, buffer.start)
    assert all(i + 1 not in distinct and i - 1 not in distinct for i in dropped)
    assert buffer.outliers < OUTLIER_RUN
    assert buffer.released + len(buffer) + buffer.duplicates + buffer.outliers == len(ids)


def test_in_order_arrivals_come_straight_back() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(5)
    assert buffer.push(5, "a", 0) == ["a"]
    assert buffer.push(6, "b", 0) == ["b"]
    assert len(buffer) == 0 and buffer.deadline is None


def test_a_run_is_released_by_the_push_that_completes_it() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0)
    assert buffer.push(2, 2, 0) == []
    assert buffer.push(1, 1, 0) == []
    assert buffer.push(4, 4, 0) == []
    assert buffer.push(0, 0, 0) == [0, 1, 2]
    assert buffer.next_id == 3 and len(buffer) == 1


def test_duplicates_and_ids_below_sent_are_dropped_by_reason() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0)
    assert buffer.push(0, 0, 0) == [0]
    assert buffer.push(0, 0, 0) == BELOW_SENT
    assert buffer.push(3, 3, 0) == []
    assert buffer.push(3, 3, 0) == DUPLICATE
    assert (buffer.duplicates, buffer.below_sent) == (1, 1)


def test_gap_clock_starts_when_the_gap_starts_holding() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0, gap_timeout=10)
    assert buffer.deadline is None
    buffer.push(2, 2, 100)  # id 0 and 1 missing: the gap holds from t=100
    assert buffer.deadline == 110
    buffer.push(3, 3, 105)  # more held behind the same gap: same deadline
    assert buffer.deadline == 110
    assert buffer.expire(109) == []
    assert buffer.expire(110) == [2, 3]
    assert (buffer.skipped, buffer.skips, buffer.next_id) == (2, 1, 4)
    assert buffer.deadline is None


def test_a_new_first_gap_gets_its_own_clock() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0, gap_timeout=10)
    buffer.push(1, 1, 0)
    buffer.push(3, 3, 5)
    assert buffer.push(0, 0, 8) == [0, 1]  # fills the first gap; id 2 is now missing
    assert buffer.deadline == 18


def test_zero_gap_timeout_waits_forever() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0, gap_timeout=0)
    buffer.push(1, 1, 0)
    assert buffer.deadline is None
    assert buffer.expire(10**12) == []


def test_limit_skips_to_the_lowest_held_id_at_once() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0, limit=2)
    buffer.push(5, 5, 0)
    buffer.push(7, 7, 0)
    assert buffer.push(6, 6, 0) == [5, 6, 7]
    assert (buffer.skipped, buffer.next_id, len(buffer)) == (5, 8, 0)


def test_learning_ends_early_when_the_limit_is_reached() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(None, settle=1000, limit=2)
    buffer.push(4, 4, 0)
    buffer.push(3, 3, 0)
    assert buffer.push(9, 9, 0) == [3, 4]
    assert buffer.next_id == 5


def test_the_heap_does_not_grow_with_ids_already_released() -> None:
    # A buffer that never empties (one id missing forever) must not keep every
    # released id around: memory stays proportional to what is held.
    buffer: ReorderBuffer[int] = ReorderBuffer(0)
    buffer.push(1_000_000, 0, 0)  # held forever: the buffer never empties
    for base in range(0, 10_000, 2):
        buffer.push(base + 1, 0, 0)
        buffer.push(base, 0, 0)
    assert buffer.next_id == 10_000
    assert len(buffer._heap) == len(buffer) == 1


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReorderBuffer(0, limit=0)
    with pytest.raises(ValueError):
        ReorderBuffer(0, limit_bytes=0)


@given(arrivals, st.integers(min_value=1, max_value=400))
def test_limit_bytes_bounds_what_is_held_and_skips_the_oldest_gaps(
    ids: list[int], limit_bytes: int
) -> None:
    # Item i weighs i + 1 "bytes": a push may need several gaps skipped to fit.
    buffer: ReorderBuffer[int] = ReorderBuffer(0, limit_bytes=limit_bytes, size=lambda i: i + 1)
    out: list[int] = []
    for id_ in ids:
        result = buffer.push(id_, id_, 0)
        if isinstance(result, list):
            out.extend(result)
        assert buffer.held_bytes == sum(i + 1 for i in buffer._held) <= limit_bytes
    assert all(a < b for a, b in itertools.pairwise(out))
    assert buffer.skipped == buffer.next_id - len(out)
    assert buffer.overflows <= buffer.skips
    out.extend(buffer.drain())
    assert buffer.held_bytes == 0


def test_waiting_forever_for_a_gap_is_bounded_by_bytes_and_counted() -> None:
    # gap_timeout 0: id 0 never comes; large items fill limit_bytes, then the gap is skipped.
    buffer: ReorderBuffer[bytes] = ReorderBuffer(0, limit_bytes=1000, size=len)
    assert [buffer.push(i, b"x" * 300, 0) for i in (1, 2, 3)] == [[], [], []]
    assert buffer.held_bytes == 900
    assert buffer.push(5, b"x" * 300, 0) == [b"x" * 300] * 3  # 1-3; 5 waits for 4
    assert (buffer.skipped, buffer.skips, buffer.overflows) == (1, 1, 1)
    assert (buffer.next_id, buffer.held_bytes) == (4, 300)
    assert buffer.push(0, b"late", 0) == BELOW_SENT  # the skipped id, late: dropped, counted
    # One item larger than the limit is released at once, with the gap before it.
    assert buffer.push(7, b"y" * 2000, 0) == [b"x" * 300, b"y" * 2000]
    assert (buffer.skipped, buffer.overflows, buffer.held_bytes) == (3, 3, 0)


def test_learning_ends_early_when_limit_bytes_is_reached() -> None:
    buffer: ReorderBuffer[bytes] = ReorderBuffer(None, settle=1000, limit_bytes=10, size=len)
    buffer.push(4, b"four", 0)
    buffer.push(3, b"three", 0)
    assert buffer.push(9, b"nine", 0) == [b"three", b"four"]  # 13 bytes: start; 4 fit
    assert (buffer.next_id, buffer.held_bytes, buffer.overflows) == (5, 4, 0)


@settings(max_examples=50)
@given(st.permutations(range(300)))
def test_a_permutation_comes_out_whole_and_sorted(order: list[int]) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(0)
    assert feed(buffer, order) == list(range(300))
    assert len(buffer) == 0 and len(buffer._heap) == 0


def settle_with(ids: list[int], settle: float = 10) -> tuple[ReorderBuffer[int], list[int]]:
    """A learning buffer fed ``ids`` at time 0, then expired at the end of the settle."""
    buffer: ReorderBuffer[int] = ReorderBuffer(None, settle=settle)
    for id_ in ids:
        assert buffer.push(id_, id_, 0) == []
    return buffer, buffer.expire(settle)


def test_a_stray_id_below_the_stream_is_an_outlier_not_a_stall() -> None:
    # {"id": -5} before 0..4999: starting at -5 waited for -4 forever.
    buffer, out = settle_with([-5, *range(4_999, -1, -1)])
    assert out == [] and buffer.next_id is None  # one more settle for -4 .. -1
    out = buffer.expire(20)
    assert out == list(range(5_000))
    assert (buffer.start, buffer.outliers, len(buffer)) == (0, 1, 0)
    assert buffer.push(-5, -5, 21) == BELOW_START  # again, later: dropped, counted


def test_a_first_id_joined_by_its_late_successor_is_no_outlier() -> None:
    buffer, out = settle_with([0, *range(2, 40)])  # 1 is late
    assert out == []
    assert buffer.push(1, 1, 15) == []  # within the second settle
    assert buffer.expire(20) == list(range(40))
    assert (buffer.start, buffer.outliers) == (0, 0)


def test_a_first_id_still_alone_after_the_second_settle_is_dropped_and_counted() -> None:
    buffer, _ = settle_with([0, *range(2, 40)])
    assert buffer.expire(20) == list(range(2, 40))
    assert (buffer.start, buffer.outliers) == (2, 1)
    # Its successor, later still, is below the start: dropped and reported, never a stall.
    assert buffer.push(1, 1, 30) == BELOW_START
    assert (buffer.below_start, buffer.lowest_below_start, buffer.below_sent) == (1, 1, 0)


def test_several_strays_are_outliers() -> None:
    buffer, _ = settle_with([-100, 10**30, -50, *range(20)])
    assert buffer.expire(20) == list(range(20))
    assert buffer.outliers == 2 and list(buffer._held) == [10**30]  # a stray above waits


def test_without_a_run_to_judge_by_the_lowest_id_starts() -> None:
    # A trickle: too few ids for a run; a sparse start: every low id alone.
    for ids in ([0, 3], [-5, *range(OUTLIER_RUN - 1)], [0, 2, 4, 6, 8, 10, 12, 14, 16, 17, 18]):
        buffer, out = settle_with(ids)
        assert out == contiguous_prefix(ids, min(ids)), ids
        assert (buffer.start, buffer.outliers) == (min(ids), 0)


def test_lowest_ids_with_neighbours_are_never_outliers() -> None:
    # Late ids leave holes, but every low id has a neighbour: the stream starts at 0.
    ids = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19]
    buffer, out = settle_with(ids)
    assert out == [0, 1] and buffer.outliers == 0


def test_a_first_id_later_than_the_settle_time_is_dropped_as_below_start() -> None:
    buffer, out = settle_with(list(range(5, 10)))
    assert out == list(range(5, 10))
    for id_ in (3, 4, 9):
        buffer.push(id_, id_, 50)
    assert (buffer.below_start, buffer.lowest_below_start, buffer.below_sent) == (2, 3, 1)
    assert buffer.learned


def test_ids_below_a_configured_first_id_are_below_start() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(10)
    assert buffer.push(-5, -5, 0) == BELOW_START
    assert buffer.push(10, 10, 0) == [10]
    assert buffer.push(10, 10, 0) == BELOW_SENT
    assert not buffer.learned and buffer.start == 10
