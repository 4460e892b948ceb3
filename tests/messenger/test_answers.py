"""Answers built from one transaction's rows."""

from __future__ import annotations

import orjson

from skns.messenger.answers import HISTORY, answer_bodies
from skns.messenger.store import Committed, Row


def rows(first: int, last: int) -> list[Row]:
    return [
        (s, f"s{s % 3}", f"t{s}", f"2026-01-01T00:00:{s:02d}.000000Z", s)
        for s in range(first, last + 1)
    ]


def seqs(body: bytes) -> list[int]:
    return [m["seq"] for m in orjson.loads(body)["messages"]]


def test_each_post_gets_the_history_up_to_its_own_message() -> None:
    committed = Committed(previous=rows(3, 11), new=rows(12, 14))
    bodies = answer_bodies(committed)
    assert [seqs(b) for b in bodies] == [
        list(range(3, 13)),
        list(range(4, 14)),
        list(range(5, 15)),
    ]


def test_short_history() -> None:
    bodies = answer_bodies(Committed(previous=[], new=rows(1, 3)))
    assert [seqs(b) for b in bodies] == [[1], [1, 2], [1, 2, 3]]


def test_batch_larger_than_the_history() -> None:
    bodies = answer_bodies(Committed(previous=rows(1, 9), new=rows(10, 40)))
    assert len(bodies) == 31
    assert all(len(seqs(b)) == HISTORY for b in bodies)
    assert seqs(bodies[-1]) == list(range(31, 41))


def test_message_fields() -> None:
    (body,) = answer_bodies(Committed(previous=[], new=[(1, "ann", 'he said "hi"', "T", 1)]))
    assert orjson.loads(body) == {
        "messages": [
            {
                "seq": 1,
                "sender": "ann",
                "text": 'he said "hi"',
                "created_at": "T",
                "sender_count": 1,
            }
        ]
    }


def test_extra_previous_rows_are_ignored() -> None:
    bodies = answer_bodies(Committed(previous=rows(1, 20), new=rows(21, 21)), history=3)
    assert [seqs(b) for b in bodies] == [[19, 20, 21]]
    assert [seqs(b) for b in answer_bodies(Committed(rows(1, 5), rows(6, 7)), history=1)] == [
        [6],
        [7],
    ]
