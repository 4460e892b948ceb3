"""Task results and unfinished jobs saved at stop and taken up at start."""

from __future__ import annotations

import logging

from skns.tasks import keep
from skns.tasks.store import DONE, FAILED, QUEUED, RUNNING, Store, Task


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outcomes_and_jobs_round_trip_and_expired_ones_are_dropped(tmp_path):
    clock = Clock()
    store = Store(ttl=50.0, max_bytes=10_000, clock=clock)
    old, done, queued, running = (
        Task("old", 5, "soft", []),
        Task("done", 2**64 - 1, "hard", []),
        Task("queued", 7, "soft", []),
        Task("running", 9, "hard", []),
    )
    for task in (old, done, queued, running):
        store.add(task)
    store.finish(old, FAILED, b'{"type":"error","result":"Timeout error"}')
    clock.now = 140.0
    store.finish(done, DONE, b'{"type":"success","task_id":"done","result":120}')
    running.state = RUNNING
    path = tmp_path / "tasks" / keep.FILE
    # The store's clock reads 140 when the wall clock reads 1000.
    assert keep.save(path, store.tasks(), wall_offset=1000.0 - 140.0) == 4
    assert not path.with_suffix(".tmp").exists()

    # Taken up at wall time 1020: "old" expired at 150 + 860 = 1010; "done" lasts to 1050.
    kept = {k.id: k for k in keep.load(path, now=1020.0)}
    assert not path.exists()  # read once
    assert sorted(kept) == ["done", "queued", "running"]
    assert kept["done"].finished and kept["done"].expires == 1050.0
    assert kept["done"].frame == b'{"type":"success","task_id":"done","result":120}'
    assert kept["done"].number == 2**64 - 1
    assert (kept["queued"].state, kept["running"].state) == (QUEUED, RUNNING)
    assert not kept["running"].finished


def test_a_missing_file_is_nothing_and_bad_lines_are_skipped(tmp_path, caplog):
    path = tmp_path / keep.FILE
    assert keep.load(path, now=0.0) == []
    path.write_bytes(b'{"id":"a","number":3,"queue":"soft","state":"queued"}\nnot json\n{"id":1}\n')
    with caplog.at_level(logging.ERROR):
        kept = keep.load(path, now=0.0)
    assert [k.id for k in kept] == ["a"]
    assert "2 unreadable line(s) skipped" in caplog.text


def test_an_outcome_taken_up_keeps_its_remaining_ttl():
    clock = Clock()
    store = Store(ttl=3600.0, max_bytes=10_000, clock=clock)
    task = Task("t", 1, "soft", [])
    store.add(task)
    store.finish(task, DONE, b"frame", ttl=10.0)
    clock.now += 9.0
    assert store.get("t") is task
    clock.now += 2.0
    assert store.get("t") is None
