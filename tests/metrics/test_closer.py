import json

import pytest

from skns.metrics.closer import Closer
from skns.metrics.window import Aggregate, Schedule


def rows(lines):
    return [
        (r["timestamp"], r["count_type"], r["count"], r["A1_sum"]) for r in map(json.loads, lines)
    ]


def closer(first=0):
    return Closer(Schedule(10.0, (60.0, 10.0)), first)


def test_base_line_each_window_and_longer_line_after_it():
    c = closer(0)
    out = []
    for w in range(6):
        out += c.close(w, Aggregate(1, w, w, w))
    assert rows(out) == [
        (10, "10s", 1, 0),
        (20, "10s", 1, 1),
        (30, "10s", 1, 2),
        (40, "10s", 1, 3),
        (50, "10s", 1, 4),
        (60, "10s", 1, 5),
        (60, "60s", 6, 15),
    ]


def test_start_mid_interval_writes_a_partial_longer_window():
    c = closer(4)
    out = c.close(4, Aggregate(1, 1, 1, 1)) + c.close(5, Aggregate(2, 2, 2, 2))
    assert rows(out)[-1] == (60, "60s", 3, 3)


def test_windows_close_in_order_only():
    c = closer(0)
    with pytest.raises(ValueError):
        c.close(1, Aggregate())


def test_restart_in_the_same_window_carries_the_partial():
    first = closer(0)
    first.close(0, Aggregate(1, 5, 5, 5))
    state = first.snapshot({1: Aggregate(2, 4, 3, 1)})
    second = closer(1)
    assert second.restore(json.loads(json.dumps(state)), now=1) == []
    out = second.close(1, Aggregate(1, 10, 9, 0))
    assert rows(out) == [(20, "10s", 3, 14)]
    later = []
    for w in range(2, 6):
        later += second.close(w, Aggregate())
    assert rows(later)[-1] == (60, "60s", 4, 19)  # the 60 s totals survived the restart too


def test_restart_after_the_window_ended_writes_it_once_and_invents_nothing():
    first = closer(0)
    first.close(0, Aggregate(1, 1, 1, 1))
    state = first.snapshot({1: Aggregate(2, 2, 2, 2)})
    second = closer(9)  # down from window 1 (t=15) until window 9 (t=95)
    owed = second.restore(state, now=9)
    # window 1 ran (partly): written; windows 2..8 were down: not written;
    # the 60 s interval [0, 60) ran partly: written with what it had.
    assert rows(owed) == [(20, "10s", 2, 2), (60, "60s", 3, 3)]
    assert second.next == 9
    assert rows(second.close(9, Aggregate())) == [(100, "10s", 0, 0)]


def test_restore_refuses_another_window_configuration():
    state = closer(0).snapshot({0: Aggregate()})
    other = Closer(Schedule(5.0, (5.0,)), 0)
    with pytest.raises(ValueError):
        other.restore(state, now=0)


def test_restore_that_skips_windows_writes_the_interval_it_left():
    """Windows 1 and 2 ran, 3..5 were down, window 6 (next interval) ran again: the first
    60 s line is written with what it had, before window 6's line, and not lost."""
    first = closer(0)
    first.close(0, Aggregate(1, 1, 1, 1))
    state = first.snapshot({1: Aggregate(1, 2, 2, 2), 2: Aggregate(1, 3, 3, 3)})
    state["windows"]["6"] = Aggregate(1, 7, 7, 7).as_list()
    second = closer(7)
    owed = second.restore(state, now=7)
    assert rows(owed) == [
        (20, "10s", 1, 2),
        (30, "10s", 1, 3),
        (60, "60s", 3, 6),
        (70, "10s", 1, 7),
    ]
    later = []
    for w in range(7, 12):
        later += second.close(w, Aggregate())
    assert rows(later)[-1] == (120, "60s", 1, 7)
