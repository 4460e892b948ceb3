"""The task server's journal: what it writes, its compaction, and a kill -9 of the server
(real processes) that loses no task acknowledged, also on a full disk."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from helpers import wait_for
from skns import jsonexact
from skns.tasks import journal, keep
from skns.tasks.digits import decimal_digits
from skns.tasks.local import LocalServer, free_port, local_settings
from skns.tasks.store import DONE, QUEUED, RUNNING, TIMED_OUT, Store, Task

BIG = 19_000  # 19000! has 73,048 digits: its frame is past journal.FRAME_MAX
SLOW = 300_000  # about 2 s of work (conftest.LONG_JOB): past a 1 s soft limit
HARD = 300_001  # the hard queue (soft_max below): some seconds, well within its limit


def rows(path: Path) -> dict[str, dict[str, Any]]:
    """The journal's rows by id (each id once)."""
    lines = path.read_bytes().splitlines()
    out = {row["id"]: row for row in map(jsonexact.loads, lines)}
    assert len(out) == len(lines), lines
    return out


# -- the journal on its own (real files, a real loop) -------------------------------------


def test_a_job_is_written_before_accept_returns_outcomes_once_per_iteration(tmp_path):
    path = tmp_path / "tasks" / journal.FILE

    async def scenario() -> None:
        store = Store(ttl=100.0, max_bytes=1 << 30)
        j = journal.Journal(path, compact_bytes=1 << 30, live=store.tasks)
        await j.start()
        assert path.read_bytes() == b""
        small, big = Task("small", 5, "soft", []), Task("big", BIG, "soft", [])
        for task in (small, big):
            assert j.accept(task)
            store.add(task)
        assert list(rows(path)) == ["small", "big"]  # written when accept returned
        store.finish(small, DONE, b'{"type":"success","task_id":"small","result":120}')
        j.finished(small)
        store.finish(big, DONE, b"1" * (journal.FRAME_MAX + 1))
        j.finished(big)
        assert len(path.read_bytes().splitlines()) == 2  # not yet: at the end of the iteration
        await asyncio.sleep(0)
        lines = [jsonexact.loads(line) for line in path.read_bytes().splitlines()]
        assert [(r["id"], r["state"]) for r in lines] == [
            ("small", QUEUED),
            ("big", QUEUED),
            ("small", DONE),
            ("big", DONE),
        ]
        assert lines[2]["frame"] == '{"type":"success","task_id":"small","result":120}'
        assert "frame" not in lines[3] and lines[3]["expires"] > 0  # computed again if lost
        assert j.stats()["bytes"] == path.stat().st_size
        j.close()

    asyncio.run(scenario())


def test_outcomes_stored_while_the_first_rewrite_runs_are_appended_after_it(tmp_path):
    path = tmp_path / journal.FILE

    async def scenario() -> None:
        store = Store(ttl=100.0, max_bytes=1 << 30)
        tasks = [Task(f"t{n}", n, "soft", []) for n in range(2000)]  # taken up: to run
        for task in tasks:
            store.add(task)
        j = journal.Journal(path, compact_bytes=1 << 30, live=store.tasks)
        starting = asyncio.create_task(j.start())  # writes in a thread
        tmp = path.with_name(f".{path.name}.tmp")  # the new file, renamed once written
        for _ in range(10_000):  # until the first rows are written, as "queued"
            if path.exists() or (tmp.exists() and tmp.stat().st_size > 0):
                break
            await asyncio.sleep(0.001)
        for task in tasks[:3]:  # while it writes (or before it is installed)
            store.finish(task, DONE, b'{"n":%d}' % task.number)
            j.finished(task)
        await asyncio.sleep(0)
        await starting
        kept = {k.id: k for k in keep.load([path], now=0.0)}
        assert len(kept) == 2000
        assert [kept[f"t{n}"].frame for n in range(4)] == [b'{"n":0}', b'{"n":1}', b'{"n":2}', b""]
        j.close()

    asyncio.run(scenario())


def test_a_rewrite_keeps_exactly_the_live_entries(tmp_path):
    path = tmp_path / journal.FILE
    saved = tmp_path / keep.FILE
    saved.write_bytes(b"")  # a clean-stop file taken up: removed once the journal holds it

    async def scenario() -> None:
        store = Store(ttl=100.0, max_bytes=1 << 30)
        j = journal.Journal(path, compact_bytes=1 << 30, live=store.tasks)
        await j.start()
        tasks = {name: Task(name, 5, "soft", []) for name in ("queued", "running", "done", "big")}
        tasks["expired"] = Task("expired", 6, "hard", [])
        for task in tasks.values():
            assert j.accept(task)
            store.add(task)
        tasks["running"].state = RUNNING
        store.finish(tasks["expired"], DONE, b'{"gone":1}', ttl=0.0)  # expires at once
        store.finish(tasks["done"], TIMED_OUT, b'{"type":"error","result":"Timeout error"}')
        store.finish(tasks["big"], DONE, b"9" * (journal.FRAME_MAX + 1))
        for name in ("expired", "done", "big"):
            j.finished(tasks[name])
        await asyncio.sleep(0)
        assert len(path.read_bytes().splitlines()) == 8
        j.close()
        # The next start rewrites it, as a compaction does.
        again = journal.Journal(path, compact_bytes=1 << 30, live=store.tasks, supersedes=saved)
        await again.start()
        assert not saved.exists()
        live = rows(path)
        assert list(live) == ["queued", "running", "done", "big"]  # "expired" is gone
        assert [live[n]["state"] for n in live] == [QUEUED, RUNNING, TIMED_OUT, DONE]
        assert live["done"]["frame"] == '{"type":"error","result":"Timeout error"}'
        assert "frame" not in live["big"]
        assert "frame" not in live["queued"] and "expires" not in live["queued"]
        assert again.stats()["bytes"] == path.stat().st_size
        # Appending goes on to the new file.
        late = Task("late", 7, "soft", [])
        assert again.accept(late)
        assert list(rows(path))[-1] == "late"
        again.close()

    asyncio.run(scenario())


def test_rows_appended_while_a_compaction_runs_are_in_the_new_file(tmp_path):
    path = tmp_path / journal.FILE

    async def scenario() -> None:
        store = Store(ttl=100.0, max_bytes=1 << 30)
        for n in range(20_000):  # some tenths of a second to write, in a thread
            task = Task(f"old-{n}", n, "soft", [])
            store.add(task)
            store.finish(task, DONE, b'{"n":%d}' % n)
        j = journal.Journal(path, compact_bytes=1, live=store.tasks)
        await j.start()
        compactions = j.compactions
        accepted: list[Task] = []
        during = 0
        pad = b"x" * 4000
        for n in range(4_000):  # once the file has doubled: a rewrite, then another
            task = Task(f"new-{n}", n, "soft", [])
            assert j.accept(task)
            store.add(task)
            accepted.append(task)
            if n % 2:
                store.finish(task, DONE, b'{"new":%d,"pad":"%s"}' % (n, pad))
                j.finished(task)
            during += j._rewriting is not None
            await asyncio.sleep(0)
            if j.compactions > compactions + 1:
                break
        for _ in range(3000):  # until the last one is done
            if j._rewriting is None:
                break
            await asyncio.sleep(0.01)
        assert during > 10 and j.compactions >= compactions + 1
        kept = {k.id: k for k in keep.load([path], now=0.0)}
        assert len(kept) == len(store)
        for task in accepted:
            k = kept[task.id]
            assert k.state == task.state and k.frame == task.frame, (task.id, k)
        j.close()

    asyncio.run(scenario())


def test_the_rewrite_waits_until_the_journal_doubles(tmp_path):
    path = tmp_path / journal.FILE

    async def scenario() -> None:
        store = Store(ttl=100.0, max_bytes=1 << 30)
        for n in range(50):  # taken up from before: about 3 KB of live rows
            store.add(Task(f"live-{n}", n, "soft", []))
        j = journal.Journal(path, compact_bytes=100, live=store.tasks)
        await j.start()
        live_size = path.stat().st_size
        n = 0
        while path.stat().st_size < 2 * live_size - 100:  # growing, short of twice: no rewrite
            task = Task(f"new-{n}", n, "soft", [])
            assert j.accept(task)
            store.add(task)
            n += 1
            await asyncio.sleep(0)
            assert j._rewriting is None and j.compactions == 1
        while j.compactions == 1:
            assert n < 1000
            task = Task(f"new-{n}", n, "soft", [])
            assert j.accept(task)
            store.add(task)
            n += 1
            await asyncio.sleep(0.01)
        assert {k.id for k in keep.load([path], now=0.0)} == {t.id for t in store.tasks()}
        j.close()

    asyncio.run(scenario())


def test_a_journal_that_cannot_be_written_at_start_refuses_until_a_rewrite_works(tiny_fs):
    fs = tiny_fs(64 * 1024)
    path = fs.path / "tasks" / journal.FILE

    async def scenario() -> None:
        store = Store(ttl=100.0, max_bytes=1 << 30)
        for n in range(100):  # taken up from before
            store.add(Task(f"old-{n}", n, "soft", []))
        fs.fill()
        j = journal.Journal(path, compact_bytes=1 << 30, live=store.tasks)
        await j.start()
        assert j.error == "No space left on device" and j.stats()["error"] == j.error
        assert not j.accept(Task("refused", 1, "soft", []))
        fs.free()
        task = Task("new", 2, "soft", [])
        for _ in range(300):  # a rewrite is tried at most once a second, when a job comes
            if j.accept(task):
                break
            await asyncio.sleep(0.01)
        assert j.error is None
        store.add(task)
        assert {k.id for k in keep.load([path], now=0.0)} == {t.id for t in store.tasks()}
        j.close()

    asyncio.run(scenario())


# -- kill -9 of the real server ----------------------------------------------------------


def answer(ws: ClientConnection, number: int) -> dict[str, Any]:
    """The immediate answer to a submission (final frames pushed meanwhile are skipped)."""
    ws.send(json.dumps({"type": "factorial", "number": number}))
    while (frame := json.loads(ws.recv(timeout=10)))["type"] == "success":
        pass
    return frame


def submit(ws: ClientConnection, number: int) -> str:
    ws.send(json.dumps({"type": "factorial", "number": number}))
    ack = json.loads(ws.recv(timeout=10))
    assert ack["type"] == "result", ack
    return ack["task_id"]


def fetch(ws: ClientConnection, task_id: str, timeout: float = 120.0) -> str:
    """The final frame of ``task_id``: at once, or pushed after a ``pending`` answer."""
    ws.send(json.dumps({"type": "result", "task_id": task_id}))
    frame = str(ws.recv(timeout=10))
    if frame.startswith('{"type":"pending"'):
        assert json.loads(frame)["task_id"] == task_id, frame
        frame = str(ws.recv(timeout=timeout))
    assert '"Task not found"' not in frame[:80], frame
    assert f'"task_id":"{task_id}"' in frame[:100], frame[:100]
    return frame


def success(task_id: str, number: int) -> str:
    digits = decimal_digits(math.factorial(number)).decode()
    return f'{{"type":"success","task_id":"{task_id}","result":{digits}}}'


def kill(srv: LocalServer) -> None:
    os.kill(srv.pid, signal.SIGKILL)
    assert srv.process is not None
    srv.process.join(10)


CRASH_SETTINGS: dict[str, Any] = {
    "soft_max": SLOW,
    "soft_limit": 1.0,
    "hard_limit": 120.0,
    "max_number": 400_000,
}


def test_a_kill_9_loses_no_task_acknowledged(
    make_server: Callable[..., LocalServer], tmp_path: Path, capfd: Any
) -> None:
    srv = make_server(**CRASH_SETTINGS)
    frames: dict[str, str] = {}
    with connect(srv.url, max_size=None, open_timeout=10) as ws:
        small = submit(ws, 30)
        frames[small] = str(ws.recv(timeout=30))
        big = submit(ws, BIG)
        frames[big] = str(ws.recv(timeout=30))
        assert len(frames[big]) > journal.FRAME_MAX and frames[big] == success(big, BIG)
        slow = submit(ws, SLOW)
        frames[slow] = str(ws.recv(timeout=30))
        assert json.loads(frames[slow])["result"] == "Timeout error"
        # One hard worker: the first runs, the second waits behind it.
        running, queued = submit(ws, HARD), submit(ws, HARD + 1)
        ws.send(json.dumps({"type": "result", "task_id": running}))
        assert json.loads(ws.recv(timeout=10))["status"] == "running"
        ws.send(json.dumps({"type": "result", "task_id": queued}))
        assert json.loads(ws.recv(timeout=10))["status"] == "queued"
    kill(srv)
    path = tmp_path / "tasks" / journal.FILE
    with path.open("ab") as f:  # as if killed in the middle of writing a row
        f.write(b'{"id":"torn","number":5,"qu')
    capfd.readouterr()

    again = make_server(**CRASH_SETTINGS)
    with connect(again.url, max_size=None, open_timeout=10) as ws:
        for task_id in (small, slow, big):  # the same frames; the big one computed again
            assert fetch(ws, task_id) == frames[task_id]
        assert fetch(ws, running) == success(running, HARD)
        assert fetch(ws, queued) == success(queued, HARD + 1)
    assert "1 unreadable line(s) skipped" in capfd.readouterr().err
    assert again.stats()["hard"]["done"] == 2 and again.stats()["soft"]["done"] == 1


def test_a_kill_9_of_the_child_under_the_supervisor(start_service: Any) -> None:
    port = free_port()
    tasks = {"listen": f"127.0.0.1:{port}", "soft_workers": 1, "hard_workers": 1}
    svc = start_service(tasks=tasks)
    url = f"ws://127.0.0.1:{port}/"
    with connect(url, max_size=None, open_timeout=10) as ws:
        done = submit(ws, 30)
        frame = str(ws.recv(timeout=10))
        waiting = [submit(ws, 120_000) for _ in range(3)]  # one hard worker: they queue
    (child,) = svc.children("tasks")
    os.kill(child["pid"], signal.SIGKILL)

    def restarted() -> bool:
        (new,) = svc.children("tasks")
        return new["pid"] != child["pid"] and new["up"]

    wait_for(restarted, timeout=60, what="the tasks child restarted")
    with connect(url, max_size=None, open_timeout=30) as ws:
        assert fetch(ws, done) == frame
        for task_id in waiting:
            assert fetch(ws, task_id) == success(task_id, 120_000)


# -- a full disk ---------------------------------------------------------------------------


def test_a_full_disk_refuses_new_jobs_and_loses_none_acknowledged(tiny_fs: Any) -> None:
    fs = tiny_fs(256 * 1024)
    settings = local_settings(fs.path, soft_workers=1, hard_workers=1)
    acked: dict[str, int] = {}
    with LocalServer(settings) as srv, connect(srv.url, max_size=None, open_timeout=10) as ws:
        acked[submit(ws, 10)] = 10
        fs.fill()
        refusal = None
        for n in range(2000):  # the journal's last page may hold some more rows
            frame = answer(ws, n % 50)
            if frame["type"] == "error":
                refusal = frame
                break
            assert frame["type"] == "result", frame
            acked[frame["task_id"]] = n % 50
        assert refusal is not None, "never refused"
        assert refusal["result"] == "Server busy"
        assert "journal cannot be written (No space left on device)" in refusal["detail"]
        assert "task_id" not in refusal
        # In status (published once a second or so).
        stats = wait_for(lambda: (s := srv.stats()) and s["refused"].get("Server busy") and s)
        assert stats["journal"]["write_errors"] >= 1
        # The refusal may be lifted already: a smaller row (an outcome) fitting in the space
        # the refused row's cut-back part freed is a write that works.
        assert stats["journal"]["error"] in ("No space left on device", None)
        assert stats["journal"]["last_error"] == "No space left on device"

        fs.free()
        for _ in range(100):  # accepted again as soon as a write works (a rewrite at most 1 s)
            frame = answer(ws, 20)
            if frame["type"] == "result":
                break
            time.sleep(0.1)
        assert frame["type"] == "result", frame
        acked[frame["task_id"]] = 20
        kill(srv)

    with LocalServer(settings) as srv, connect(srv.url, max_size=None, open_timeout=10) as ws:
        for task_id, number in acked.items():
            assert json.loads(fetch(ws, task_id))["result"] == math.factorial(number)
        stats = wait_for(lambda: (s := srv.stats()) and s["fetched"] == len(acked) and s)
        assert stats["journal"]["error"] is None
