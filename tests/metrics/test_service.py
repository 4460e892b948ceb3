"""The metrics service end to end: real supervisor, real workers, real UDP."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import metrics_port, metrics_table, wait_for


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def senders(n: int) -> list[socket.socket]:
    return [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]


def closed_through(path: Path, t: float, label: str) -> list[dict]:
    """Wait until the line for the window ending at ``t`` is written; return all lines."""

    def written() -> list[dict] | None:
        rows = lines(path)
        done = any(r["count_type"] == label and r["timestamp"] >= t - 1e-6 for r in rows)
        return rows if done else None

    return wait_for(written, what=f"window ending {t}")


def test_statement_example_seven_lines(start_service, tmp_path):
    """3 datagrams in one window, 3 in the next, 4 quiet windows: 6 base lines and the
    longer line (base 0.5 s, long 3 s here; 10 s and 60 s in production)."""
    out = tmp_path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(tmp_path, intervals=[0.5, 3.0]))
    port = metrics_port(svc)
    t0 = math.ceil((time.time() + 0.3) / 3.0) * 3.0
    first = [{"A1": 1, "A2": 5, "A3": 9}, {"A1": 2, "A2": 7, "A3": 4}, {"A1": 3, "A2": 6, "A3": 8}]
    second = [
        {"A1": 10, "A2": -1, "A3": -2},
        {"A1": 20, "A2": -3, "A3": 0},
        {"A1": 30, "A2": 1, "A3": 5},
    ]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sleep_until(t0 + 0.1)
    for d in first:
        tx.sendto(json.dumps(d).encode(), ("127.0.0.1", port))
    sleep_until(t0 + 0.6)
    for d in second:
        tx.sendto(json.dumps(d).encode(), ("127.0.0.1", port))
    rows = closed_through(out, t0 + 3.0, "3s")
    mine = [r for r in rows if t0 < r["timestamp"] <= t0 + 3.0 + 1e-6]
    got = [
        (r["timestamp"] - t0, r["count_type"], r["A1_sum"], r["A2_max"], r["A3_min"], r["count"])
        for r in mine
    ]
    assert got == [
        (0.5, "0.5s", 6, 7, 4, 3),
        (1.0, "0.5s", 60, 1, -2, 3),
        (1.5, "0.5s", 0, 0, 0, 0),
        (2.0, "0.5s", 0, 0, 0, 0),
        (2.5, "0.5s", 0, 0, 0, 0),
        (3.0, "0.5s", 0, 0, 0, 0),
        (3.0, "3s", 66, 7, -2, 6),
    ]
    assert all(
        list(r)[:5] == ["timestamp", "count_type", "A1_sum", "A2_max", "A3_min"] for r in mine
    )


def test_many_senders_spread_over_workers_and_merge_exactly(start_service, tmp_path):
    out = tmp_path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(tmp_path))
    port = metrics_port(svc)
    rng = random.Random(7)
    socks = senders(32)
    sent = []
    for i in range(6400):
        d = {
            "A1": rng.randint(-(2**62), 2**62),
            "A2": rng.randint(-1000, 1000),
            "A3": rng.randint(-1000, 1000),
        }
        sent.append(d)
        socks[i % 32].sendto(json.dumps(d).encode(), ("127.0.0.1", port))
    done = time.time()
    rows = [r for r in closed_through(out, done + 0.5, "0.5s") if r["count"]]
    assert sum(r["count"] for r in rows) == len(sent)
    assert sum(r["A1_sum"] for r in rows) == sum(d["A1"] for d in sent)
    assert max(r["A2_max"] for r in rows) == max(d["A2"] for d in sent)
    assert min(r["A3_min"] for r in rows) == min(d["A3"] for d in sent)
    per_worker = svc.status()["subsystems"]["metrics"]["accepted_per_worker"]
    assert sum(per_worker) == len(sent)
    assert all(n > 0 for n in per_worker), per_worker


def test_one_sender_is_shared_by_every_worker(start_service, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path, workers=3))
    port = metrics_port(svc)
    assert svc.status()["subsystems"]["metrics"]["spread"] == "cbpf"
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(6000):
        tx.sendto(b'{"A1": 1, "A2": 2, "A3": 3}', ("127.0.0.1", port))
        if i % 500 == 499:
            time.sleep(0.01)  # bounded: never more than the receive buffers hold

    def per_worker() -> list[int] | None:
        got = svc.status()["subsystems"]["metrics"]["accepted_per_worker"]
        return got if sum(got) == 6000 else None

    got = wait_for(per_worker, what="6000 datagrams accepted")
    assert max(got) / min(got) <= 1.2, got


BAD = [
    (b"not json at all", "not_json"),
    (b'{"A1": 1, "A2": 2, "A3": 3', "not_json"),
    ('{"A1": 1, "A2": 2, "A3": 3}'.encode("utf-16"), "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"A1": 1, "A3": 3}', "missing_key"),
    (b'{"A1": true, "A2": 2, "A3": 3}', "not_integer"),
    (b'{"A1": 1.5, "A2": 2, "A3": 3}', "not_integer"),
    (b'{"A1": 1, "A2": 9223372036854775808, "A3": 3}', "out_of_range"),
    (b'{"A1": 1, "A2": 2, "A3": 3, "pad": "' + b"x" * 300 + b'"}', "truncated"),
]


def test_each_rejection_is_counted_and_never_mixed_in(start_service, tmp_path):
    out = tmp_path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(tmp_path, max_datagram=128))
    port = metrics_port(svc)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    good = [{"A1": 1, "A2": 2, "A3": 3}, {"A1": 4, "A2": 5, "A3": 6}]
    for data, _ in BAD:
        tx.sendto(data, ("127.0.0.1", port))
    for d in good:
        tx.sendto(json.dumps(d).encode(), ("127.0.0.1", port))
    rows = [r for r in closed_through(out, time.time() + 0.5, "0.5s") if r["count"]]
    assert (sum(r["count"] for r in rows), sum(r["A1_sum"] for r in rows)) == (2, 5)
    assert max(r["A2_max"] for r in rows) == 5 and min(r["A3_min"] for r in rows) == 3
    metrics = svc.status()["subsystems"]["metrics"]
    expected = {}
    for _, reason in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    assert {k: v for k, v in metrics["rejected"].items() if v} == expected
    assert metrics["accepted"] == 2
    assert svc.proc.poll() is None


def test_a_flood_of_garbage_does_not_crowd_out_good_datagrams(start_service, tmp_path):
    out = tmp_path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(tmp_path))
    port = metrics_port(svc)
    socks = senders(4)
    good = 0
    for i in range(20_000):
        s = socks[i % 4]
        s.sendto(b"\x00garbage" if i % 40 else b'{"A1": 1, "A2": 1, "A3": 1}', ("127.0.0.1", port))
        good += not i % 40

    def taken() -> bool:
        m = svc.status()["subsystems"]["metrics"]
        return m["accepted"] + sum(m["rejected"].values()) + m["kernel_drops"] >= 20_000

    # A worker still taking the queue off its socket stamps what it takes now: on a loaded
    # machine the last datagrams belong to a later window than the one after sending.
    wait_for(taken, timeout=60, what="every datagram taken or dropped")
    rows = closed_through(out, time.time() + 0.5, "0.5s")
    metrics = svc.status()["subsystems"]["metrics"]
    assert sum(r["count"] for r in rows) == good == metrics["accepted"]
    assert metrics["rejected"]["not_json"] == 20_000 - good
    assert metrics["kernel_drops"] == 0


class Stream(threading.Thread):
    """Sends valid datagrams from several sockets at a steady rate until stopped."""

    def __init__(self, port: int, rate: float = 4000, sockets: int = 8) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.socks = port, rate, senders(sockets)
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                self.socks[self.sent % len(self.socks)].sendto(
                    b'{"A1": 1, "A2": 2, "A3": 3}', ("127.0.0.1", self.port)
                )
                self.sent += 1
            time.sleep(0.001)


def test_kill_9_of_a_worker_loses_nothing_published(start_service, tmp_path):
    out = tmp_path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(tmp_path))
    stream = Stream(metrics_port(svc))
    stream.start()
    time.sleep(1.0)
    victim = svc.children("udp-worker")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    reborn = wait_for(
        lambda: next(
            (
                c
                for c in svc.children("udp-worker")
                if c["index"] == victim["index"] and c["up"] and c["pid"] != victim["pid"]
            ),
            None,
        ),
        what="the worker's restart",
    )
    assert reborn["restarts"] == 1
    time.sleep(1.0)
    stream.halt.set()
    stream.join()
    rows = closed_through(out, time.time() + 0.5, "0.5s")
    written = sum(r["count"] for r in rows)
    metrics = svc.status()["subsystems"]["metrics"]
    # Every published datagram is in the windows; at most the batch in hand when
    # the worker died is missing (the socket and its queue survive the worker).
    assert written == metrics["accepted"]
    assert 0 <= stream.sent - written <= 256
    assert stream.sent > 5000


def test_sigterm_and_restart_inside_one_window_writes_it_once(start_service, tmp_path):
    out = tmp_path / "metrics.jsonl"
    shared = {
        "state_dir": str(tmp_path / "state"),
        "control_socket": str(tmp_path / "run" / "c.sock"),
    }
    table = metrics_table(tmp_path, window=6.0, intervals=[6.0])
    for _attempt in range(3):
        first = start_service(service=shared, metrics=table)
        port = metrics_port(first)
        now = time.time()
        w_end = (math.floor(now / 6.0) + 1) * 6.0
        if w_end - now < 4.0:  # not enough of this window left for stop + start: wait for the next
            sleep_until(w_end + 0.05)
            w_end += 6.0
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            tx.sendto(b'{"A1": 2, "A2": 7, "A3": -7}', ("127.0.0.1", port))
        time.sleep(0.2)
        assert first.stop() == 0
        second = start_service(service=shared, metrics=table)
        for _ in range(5):
            tx.sendto(b'{"A1": 3, "A2": 1, "A3": 1}', ("127.0.0.1", metrics_port(second)))
        if time.time() < w_end - 0.2:
            break
        second.stop()  # too slow to stay inside the window on this busy machine: again
    else:
        pytest.skip("could not stop and start within one 6 s window")
    rows = closed_through(out, w_end, "6s")
    mine = [r for r in rows if r["timestamp"] == w_end]
    assert len(mine) == 1
    assert (mine[0]["count"], mine[0]["A1_sum"], mine[0]["A2_max"], mine[0]["A3_min"]) == (
        10,
        25,
        7,
        -7,
    )
    stamps = [r["timestamp"] for r in rows]
    assert len(stamps) == len(set(stamps))
    assert not (tmp_path / "state" / "metrics-state.json").exists()


def test_sighup_after_rename_writes_to_a_new_file(start_service, tmp_path):
    out = tmp_path / "metrics.jsonl"
    svc = start_service(metrics=metrics_table(tmp_path))
    wait_for(lambda: lines(out), what="a first line")
    rotated = tmp_path / "metrics.jsonl.1"
    out.rename(rotated)
    os.kill(svc.pid, signal.SIGHUP)
    fresh = wait_for(lambda: lines(out), what="a line in the new file")
    time.sleep(0.6)
    old = lines(rotated)
    assert fresh and old
    assert fresh[0]["timestamp"] > old[-1]["timestamp"]
    assert len(lines(rotated)) == len(old)  # nothing more goes to the renamed file
