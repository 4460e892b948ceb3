"""Owners take turns; each owner's jobs keep their order."""

from __future__ import annotations

import pytest

from skns.tasks.fairqueue import FairQueue


def drain(q: FairQueue[str]) -> list[str]:
    out = []
    while q:
        out.append(q.popleft())
    return out


def test_owners_take_turns_and_keep_their_order() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.append(f"flood{i}", "flooder")
    q.append("a0", "a")
    q.append("a1", "a")
    q.append("b0", "b")
    assert len(q) == 8
    assert drain(q) == ["flood0", "a0", "b0", "flood1", "a1", "flood2", "flood3", "flood4"]
    assert len(q) == 0 and not q


def test_an_owner_back_after_emptying_queues_at_the_end_of_the_turns() -> None:
    q: FairQueue[str] = FairQueue()
    q.append("x0", "x")
    q.append("y0", "y")
    q.append("y1", "y")
    assert q.popleft() == "x0"
    q.append("x1", "x")
    assert drain(q) == ["y0", "x1", "y1"]


def test_put_back_jobs_come_first_in_their_order() -> None:
    q: FairQueue[str] = FairQueue()
    q.append("new", "a")
    for job in reversed(["held0", "held1"]):  # as a replaced worker's jobs go back
        q.appendleft(job)
    assert drain(q) == ["held0", "held1", "new"]


def test_an_empty_queue_refuses_to_pop() -> None:
    with pytest.raises(IndexError):
        FairQueue().popleft()
