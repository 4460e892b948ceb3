"""The fleet merge without a network: partials in, fleet lines out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from skns.metrics.fleetmerge import (
    Merger,
    Partial,
    decode,
    encode,
    msg_id,
    resume_tail,
    tail_key,
)
from skns.metrics.window import Aggregate, Schedule

SCHEDULE = Schedule(1.0, (1.0, 3.0))
GRACE = 2.0


def part(host: str, w: int, count: int = 1, a1: int = 1, a2: int = 0, a3: int = 0) -> Partial:
    return Partial(host, float(w + 1), Aggregate(count, a1, a2, a3))


def rows(lines: list[str]) -> list[dict]:
    return [json.loads(x) for x in lines]


def started(tail: list[dict] | None = None) -> Merger:
    return Merger(SCHEDULE, GRACE, tail or [])


def test_a_window_is_written_once_every_live_host_has_passed_it():
    m = started()
    m.add(part("a", 10), 11.0)
    m.add(part("b", 10), 11.0)
    m.add(part("a", 11), 12.0)
    assert [r["timestamp"] for r in rows(m.due(12.1))] == [11]  # b has not passed 11 yet
    m.add(part("b", 11), 12.2)
    assert [r["timestamp"] for r in rows(m.due(12.3))] == [12, 12]  # 1 s and 3 s


def test_merged_lines_sum_max_min_and_count_hosts():
    m = started()
    m.add(part("a", 10, 2, 5, 7, -1), 11.0)
    m.add(part("b", 10, 3, 6, 9, 4), 11.0)
    m.add(part("a", 11, 1, 1, 1, 1), 12.0)
    m.add(part("b", 11, 1, 1, 1, 1), 12.0)
    out = rows(m.due(12.05))
    assert out[0] == {
        "timestamp": 11, "count_type": "1s", "A1_sum": 11, "A2_max": 9, "A3_min": -1,
        "count": 5, "hosts": 2,
    }  # fmt: skip
    assert [r["timestamp"] for r in out] == [11, 12, 12]
    assert out[2] == {
        "timestamp": 12, "count_type": "3s", "A1_sum": 13, "A2_max": 9, "A3_min": -1,
        "count": 7, "hosts": 2,
    }  # fmt: skip


def test_a_silent_host_holds_a_window_only_for_the_grace():
    m = started()
    for w in (10, 11):
        m.add(part("a", w), w + 1.0)
        m.add(part("b", w), w + 1.0)
    m.add(part("a", 12), 13.0)  # b went silent after window 11
    assert [r["timestamp"] for r in rows(m.due(13.5))] == [11, 12, 12]
    assert m.due(13.9) == []  # window 12: b (last heard at 12.0) is still live, waiting
    out = rows(m.due(14.05))  # b silent for longer than the grace: no longer waited for
    assert (out[0]["timestamp"], out[0]["hosts"], out[0]["count"]) == (13, 1, 1)


def test_a_host_silent_past_the_grace_no_longer_holds_windows():
    m = started()
    m.add(part("a", 10), 11.0)
    m.add(part("b", 10), 11.0)
    m.due(11.1)
    for w in range(11, 16):
        m.add(part("a", w), w + 1.0)
    # b was last heard at 11.0: at 16.1 it is past the grace, so window 15 is due at once.
    out = rows(m.due(16.1))
    assert [r["timestamp"] for r in out if r["count_type"] == "1s"] == [12, 13, 14, 15, 16]
    assert out[-1]["hosts"] == 1


def test_windows_nobody_published_are_zeros_after_the_grace():
    m = started()
    m.add(part("a", 10), 11.0)
    m.due(11.1)
    assert m.due(13.9) == []
    out = rows(m.due(14.01))
    assert out[0] == {
        "timestamp": 12, "count_type": "1s", "A1_sum": 0, "A2_max": 0, "A3_min": 0,
        "count": 0, "hosts": 0,
    }  # fmt: skip


def test_a_late_partial_is_counted_not_merged_and_a_duplicate_is_told_apart():
    m = started()
    m.add(part("a", 10), 11.0)
    m.due(13.5)
    m.add(part("b", 10), 13.6)  # after window 10 was written without b
    m.add(part("a", 10), 13.6)  # a republish of what the line holds
    assert (m.late, m.duplicates) == (1, 1)
    assert m.status(13.6)["late_partials"] == 1


def test_a_republished_partial_of_an_open_window_counts_once():
    m = started()
    m.add(part("a", 10, 2, 5), 11.0)
    m.add(part("a", 10, 2, 5), 11.2)
    out = rows(m.due(11.3))
    assert (out[0]["count"], out[0]["A1_sum"]) == (2, 5)


def test_a1_sums_past_64_bits_stay_exact_through_messages():
    big = 2**63 - 1
    m = started()
    for host in ("a", "b", "c"):
        row = {"timestamp": 11, "count_type": "1s", "A1_sum": 3 * big, "A2_max": 1, "A3_min": 1,
               "count": 3}  # fmt: skip
        m.add(decode(encode(host, row)), 11.0)
    out = rows(m.due(11.1))
    assert out[0]["A1_sum"] == 9 * big > 2**64


def test_a_new_holder_resumes_after_the_tail_with_the_longer_intervals_totals():
    first = started()
    for w in range(9, 14):
        first.add(part("a", w, 1, w), w + 1.0)
    written = rows(first.due(14.05))  # windows 9..13: the 3 s interval 12..14 is open
    later = Merger(SCHEDULE, GRACE, written[-4:])
    assert later.next == 14
    later.add(part("a", 12, 1, 12), 13.0)  # history: written by the previous holder
    later.add(part("a", 14, 1, 14), 15.0)
    out = rows(later.due(15.05))
    assert out[-1] == {
        "timestamp": 15, "count_type": "3s", "A1_sum": 12 + 13 + 14, "A2_max": 0, "A3_min": 0,
        "count": 3, "hosts": 1,
    }  # fmt: skip
    assert later.late == 0


def test_a_new_holder_writes_a_long_line_held_back_after_its_base_line():
    first = started()
    for w in range(9, 12):
        first.add(part("a", w, 1, w), w + 1.0)
    written = rows(first.due(12.05))  # window 11 ends the 3 s interval 9..11
    assert [(r["timestamp"], r["count_type"]) for r in written[-2:]] == [(12, "1s"), (12, "3s")]
    # A full disk cut the write after the 1 s line of window 11: its 3 s line is owed.
    later = Merger(SCHEDULE, GRACE, written[:-1])
    assert later.next == 12
    later.add(part("a", 12, 1, 12), 13.0)
    out = rows(later.due(13.05))
    assert out[:2] == [written[-1], {**written[-1], "timestamp": 13, "count_type": "1s",
                                     "A1_sum": 12, "count": 1}]  # fmt: skip
    # Written: it is not written again.
    again = Merger(SCHEDULE, GRACE, written)
    again.add(part("a", 12, 1, 12), 13.0)
    assert [(r["timestamp"], r["count_type"]) for r in rows(again.due(13.05))] == [(13, "1s")]


def line(t: int, kind: str = "1s", count: int = 0) -> dict:
    return {
        "timestamp": t,
        "count_type": kind,
        "A1_sum": count,
        "A2_max": 0,
        "A3_min": 0,
        "count": count,
        "hosts": 1,
    }


def test_a_holder_resumes_after_the_recorded_tail_when_the_file_was_rotated():
    kept = [
        line(11, count=1),
        line(12, count=2),
        line(12, "3s", 3),
        line(13, count=4),
        line(14, count=8),
    ]
    assert resume_tail([], kept) == kept  # rotated: the file is empty
    assert resume_tail([line(14, count=8)], kept) == kept  # rotated after 13: totals kept
    assert resume_tail([*kept, line(15)], kept)[-1] == line(15)  # a line after the record
    assert resume_tail([line(5)], kept) == [line(5)]  # a host's own file: filled in from 5
    assert resume_tail([line(13)], []) == [line(13)]  # nothing recorded
    # What does not read as a line (by hand, damaged) is passed over, never a crash.
    bad = [
        {"x": 1},
        {**line(16), "timestamp": "16"},
        {**line(16), "count": True},
        {**line(16), "count_type": "ns"},
        {**line(16), "timestamp": float("nan")},
        {**line(16), "count_type": 16},
        {**line(16), "hosts": None},
    ]
    assert resume_tail([*kept, *bad], bad) == kept
    assert resume_tail(bad, [*kept, *bad]) == kept
    # The 3 s interval ending at 15 holds 13 and 14 from the record, though the rotated
    # file holds only 14.
    m = Merger(SCHEDULE, GRACE, resume_tail([line(14, count=8)], kept))
    m.add(part("a", 14, count=16), 15.0)
    assert [(r["count_type"], r["count"]) for r in rows(m.due(15.1))] == [("1s", 16), ("3s", 28)]


def test_the_recorded_tail_is_one_per_fleet_output_path_and_windows():
    key = tail_key(Path("/var/lib/skns/fleet.jsonl"), 10.0, (10.0, 60.0))
    assert key == tail_key(Path("/var/lib/skns/fleet.jsonl"), 10, [60, 10])
    assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", key)  # a valid key-value store key
    others = [
        tail_key(Path("/srv/fleet.jsonl"), 10.0, (10.0, 60.0)),
        tail_key(Path("/var/lib/skns/fleet.jsonl"), 5.0, (10.0, 60.0)),
        tail_key(Path("/var/lib/skns/fleet.jsonl"), 10.0, (10.0, 3600.0)),
    ]
    assert len({key, *others}) == 4


def test_a_fresh_output_starts_at_the_oldest_window_the_stream_holds():
    # Every holder reading the stream finds this same start: one that could write nothing
    # before it lost the lease leaves its successor no gap.
    m = Merger(SCHEDULE, GRACE, [])
    m.add(part("a", 7), 8.0)
    m.add(part("a", 10), 11.0)
    assert [(r["timestamp"], r["count_type"]) for r in rows(m.due(11.1))] == [
        (8, "1s"), (9, "1s"), (9, "3s"), (10, "1s"), (11, "1s")
    ]  # fmt: skip
    m.add(part("b", 5), 11.2)  # older than the output's start: history, not late
    assert (m.late, m.duplicates) == (0, 0)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"[]", "not a JSON object"),
        (b'{"end": 1}', "no host"),
        (b'{"host": "a", "end": "x"}', "no window end"),
        (b'{"host": "a", "end": 1, "count": 1, "A1_sum": 1.5, "A2_max": 1, "A3_min": 1}', "integ"),
        (b'{"host": "a", "end": 1, "count": -1, "A1_sum": 1, "A2_max": 1, "A3_min": 1}', "negat"),
    ],
)
def test_bad_partials_are_refused_with_the_reason(doc: bytes, reason: str):
    with pytest.raises(ValueError, match=reason):
        decode(doc)


def test_a_misaligned_partial_is_counted():
    m = started()
    m.add(Partial("a", 10.5, Aggregate(1, 1, 1, 1)), 11.0)
    assert m.misaligned == 1


def test_message_ids_name_host_and_window():
    assert msg_id("a", 20.0) == "a@20"
    assert msg_id("a", 20.5) == "a@20.5"
