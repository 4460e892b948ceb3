import json

import pytest

from skns.metrics.window import Aggregate, end_of, index_of, label, line, timestamp


def test_windows_align_to_the_wall_clock():
    assert index_of(1_700_000_009.999, 10) == 170_000_000
    assert index_of(1_700_000_010.0, 10) == 170_000_001
    assert end_of(170_000_000, 10) == 1_700_000_010
    assert index_of(-0.5, 10) == -1


@pytest.mark.parametrize(
    ("seconds", "text"), [(10.0, "10s"), (60.0, "60s"), (0.5, "0.5s"), (3600.0, "3600s")]
)
def test_label(seconds, text):
    assert label(seconds) == text


def test_timestamp_is_an_integer_for_whole_seconds():
    assert timestamp(1_700_000_010.0) == 1_700_000_010
    assert isinstance(timestamp(1_700_000_010.0), int)
    assert timestamp(1.5) == 1.5


def test_merge_takes_sum_max_min_and_ignores_empty():
    a = Aggregate()
    a.merge(Aggregate())
    assert a == Aggregate(0, 0, 0, 0)
    a.merge(Aggregate(2, 10, -5, 7))
    a.merge(Aggregate(1, 1, -9, 9))
    a.merge(Aggregate())
    assert a == Aggregate(3, 11, -5, 7)


def test_line_has_the_contract_keys_in_order():
    text = line(1_700_000_010, 10, Aggregate(3, 2**70, -1, 1))
    row = json.loads(text)
    assert list(row) == ["timestamp", "count_type", "A1_sum", "A2_max", "A3_min", "count"]
    assert row == {
        "timestamp": 1_700_000_010,
        "count_type": "10s",
        "A1_sum": 2**70,  # beyond 64 bits, still exact
        "A2_max": -1,
        "A3_min": 1,
        "count": 3,
    }


def test_empty_window_is_zeros():
    row = json.loads(line(10, 10, Aggregate()))
    assert (row["A1_sum"], row["A2_max"], row["A3_min"], row["count"]) == (0, 0, 0, 0)
