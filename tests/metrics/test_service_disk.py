"""The metrics service on a full disk (a real tmpfs of 64 KiB): the service keeps running,
says so in status, and once space is back every window is written exactly once, whole."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from pathlib import Path

from helpers import metrics_port, metrics_table, wait_for

# Short windows: the lines that fill the file's last page come quickly.
SHORT = [0.1, 0.2, 0.4]


class Sender(threading.Thread):
    """One datagram every 5 ms until stopped; counts what it sent."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent = 0
        self.done = threading.Event()

    def run(self) -> None:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        data = json.dumps({"A1": 1, "A2": 2, "A3": 3}).encode()
        deadline = time.monotonic() + 120
        while not self.done.is_set() and time.monotonic() < deadline:
            tx.sendto(data, ("127.0.0.1", self.port))
            self.sent += 1
            time.sleep(0.005)
        self.ended = time.time()

    def stop(self) -> None:
        self.done.set()
        self.join()


def whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"torn last line: {data[-80:]!r}"
    return [json.loads(text) for text in data.decode().splitlines()]  # none glued or cut


def by_type(rows: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["count_type"], []).append(r["timestamp"])
    return out


def assert_consecutive(stamps: list[float], step: float) -> None:
    """Each window once, none skipped (the service ran for all of them)."""
    for a, b in itertools.pairwise(stamps):
        assert abs(b - a - step) < 1e-6, f"window after {a} is {b}: skipped or repeated"


def output_state(svc) -> dict:
    return svc.status()["subsystems"]["metrics"]["output_state"]


def test_a_full_disk_holds_lines_back_and_writes_each_once_when_space_is_back(
    start_service, tiny_fs
):
    fs = tiny_fs(64 * 1024)
    out = fs.path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(fs.path, intervals=SHORT, window=SHORT[0]))
    sender = Sender(metrics_port(svc))
    sender.start()
    wait_for(lambda: out.exists() and out.stat().st_size > 0, what="first lines")
    fs.fill()
    # The file's last page still has room for a few dozen lines; then ENOSPC.
    wait_for(lambda: output_state(svc)["condition"], timeout=60, what="ENOSPC in status")
    wait_for(lambda: output_state(svc)["lines_pending"] >= 12, timeout=30, what="lines pending")
    state = output_state(svc)
    assert state["condition"].startswith("ENOSPC since "), state
    assert "lines pending" in state["condition"]
    assert "output ENOSPC since" in svc.status()["service"]["summary"]
    render = svc.ctl("status")
    assert render.returncode == 0 and "(ENOSPC since " in render.stdout, render.stdout
    assert svc.proc.poll() is None

    fs.free()
    wait_for(lambda: output_state(svc)["condition"] is None, timeout=30, what="recovery")
    sender.stop()
    end = sender.ended
    wait_for(
        lambda: any(r["timestamp"] > end + 0.5 for r in whole_lines(out)),
        what="the windows after the last datagram",
    )
    assert svc.stop() == 0
    rows = whole_lines(out)
    stamps = by_type(rows)
    for seconds in SHORT:
        assert_consecutive(stamps[f"{seconds:g}s"], seconds)
    assert sum(r["count"] for r in rows if r["count_type"] == f"{SHORT[0]:g}s") == sender.sent
    assert "writable again" in svc.log()


def test_lines_still_held_at_stop_are_written_by_the_next_start(start_service, tiny_fs, tmp_path):
    # Short windows: a write cut short by the full disk often falls between the lines of
    # one close (a window's base line written, its longer intervals' lines held).
    fs = tiny_fs(64 * 1024)
    out = fs.path / "metrics.jsonl"
    tables = {
        "service": {"state_dir": str(tmp_path / "state")},
        "metrics": metrics_table(fs.path, intervals=SHORT, window=SHORT[0]),
    }
    svc = start_service(**tables)
    wait_for(lambda: out.exists() and out.stat().st_size > 0, what="first lines")
    fs.fill()
    wait_for(lambda: output_state(svc)["lines_pending"] >= 12, timeout=60, what="lines pending")
    down = time.time()
    assert svc.stop() == 0
    assert "unwritten line(s)" in svc.log()
    held = whole_lines(out)
    fs.free()
    again = start_service(**tables)
    up = time.time()
    wait_for(lambda: len(whole_lines(out)) >= len(held) + 12, what="the held lines")
    assert again.stop() == 0
    rows = whole_lines(out)
    assert rows[: len(held)] == held
    for seconds in SHORT:
        stamps = by_type(rows)[f"{seconds:g}s"]
        # Each window once, in order; none missing but those the service was down for.
        assert len(set(stamps)) == len(stamps)
        assert stamps == sorted(stamps)
        for a, b in itertools.pairwise(stamps):
            if b - a > seconds + 1e-6:  # windows (a, b - seconds] missing: within the downtime
                assert down <= a and b - seconds <= up, (
                    f"{seconds}s: lost {a + seconds:.1f}..{b - seconds:.1f}"
                )


def test_a_state_file_that_cannot_be_saved_is_reported_not_fatal(start_service, tiny_fs):
    fs = tiny_fs(16 * 1024)
    svc = start_service(
        service={"state_dir": str(fs.path / "state")},
        metrics=metrics_table(fs.path.parent, intervals=[0.25], window=0.25),
    )
    fs.fill()
    assert svc.stop() == 0
    assert "cannot save open window(s)" in svc.log()
    assert "No space left on device" in svc.log()
    assert not [p.name for p in (fs.path / "state").iterdir() if "metrics-state" in p.name]
