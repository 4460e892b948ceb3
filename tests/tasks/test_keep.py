"""Task results and unfinished jobs saved at stop and taken up at start."""

from __future__ import annotations

import logging

from skns import jsonexact
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
    kept = {k.id: k for k in keep.load([path], now=1020.0)}
    assert sorted(kept) == ["done", "queued", "running"]
    assert kept["done"].finished and kept["done"].expires == 1050.0
    assert kept["done"].frame == b'{"type":"success","task_id":"done","result":120}'
    assert kept["done"].number == 2**64 - 1
    assert (kept["queued"].state, kept["running"].state) == (QUEUED, RUNNING)
    assert not kept["running"].finished


def test_a_missing_file_is_nothing_and_bad_lines_are_skipped(tmp_path, caplog):
    path = tmp_path / keep.FILE
    assert keep.load([path], now=0.0) == []
    path.write_bytes(
        b'{"id":"a","number":3,"queue":"soft","state":"queued"}\nnot json\n{"id":1}\n'
        b'{"id":"b","number":3,"queue":"medium","state":"queued"}\n'
        # A journal killed in mid-write: the torn last line.
        b'{"id":"c","number":3,"queue":"so'
    )
    with caplog.at_level(logging.WARNING):
        kept = keep.load([path], now=0.0)
    assert [k.id for k in kept] == ["a"]
    assert "4 unreadable line(s) skipped" in caplog.text


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


def row(task_id: str, state: str = QUEUED, **more: object) -> bytes:
    fields = {"id": task_id, "number": 7, "queue": "soft", "state": state, **more}
    return jsonexact.dumps(fields) + b"\n"


def test_later_rows_replace_earlier_ones_and_the_order_is_kept(tmp_path):
    journal, saved = tmp_path / "journal.jsonl", tmp_path / keep.FILE
    journal.write_bytes(
        row("j1")
        + row("j2")
        + row("late", DONE, frame='{"late":1}', expires=50.0)
        + row("j3")
        + row("early", DONE, frame='{"early":1}', expires=40.0)
        + row("big")
        + row("j2", DONE, frame='{"j2":1}', expires=45.0)  # j2's outcome replaces its job
        + row("big", DONE, expires=60.0)  # too big to write: computed again
        + row("gone", DONE, expires=5.0)
    )
    # The clean-stop file was written after the journal: its rows win.
    saved.write_bytes(row("j3", DONE, frame='{"j3":1}', expires=55.0))
    kept = keep.load([journal, saved], now=10.0)
    # Jobs to run (and results to compute again) in the order first written, then
    # outcomes oldest first; "gone" expired.
    assert [k.id for k in kept] == ["j1", "big", "early", "j2", "late", "j3"]
    big = kept[1]
    assert big.finished and big.recompute and big.frame == b""
    assert [k.frame for k in kept[2:]] == [b'{"early":1}', b'{"j2":1}', b'{"late":1}', b'{"j3":1}']
    assert not any(k.recompute for k in kept[2:])
    assert journal.exists() and saved.exists()  # the server removes them, once it may


def test_a_row_leaves_a_big_frame_out_but_keeps_its_expiry():
    task = Task("t", 20_000, "soft", [])
    store = Store(ttl=10.0, max_bytes=1 << 20, clock=lambda: 100.0)
    store.add(task)
    store.finish(task, DONE, b'{"type":"success"}')
    assert jsonexact.loads(keep.row(task, 1000.0, frame=False)) == {
        "id": "t",
        "number": 20_000,
        "queue": "soft",
        "state": DONE,
        "expires": 1110.0,
    }
    assert jsonexact.loads(keep.row(task, 1000.0))["frame"] == '{"type":"success"}'
