"""The control socket: answers carry any figure exact, and no client can stop the service."""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
import time
from pathlib import Path

from helpers import metrics_port, metrics_table, wait_for
from skns import control

BIG = 9223372036854775807  # the largest A1 a datagram may carry


def test_status_carries_a_sum_past_64_bits_exact(start_service, tmp_path):
    window = 1.0
    svc = start_service(metrics=metrics_table(tmp_path, window=window, intervals=[window]))
    port = metrics_port(svc)
    for _ in range(4):  # a loaded machine may split the three across two windows, or close
        # the next window before skns-ctl reads the status: again, in a later window
        # All three datagrams in one window: start early in one.
        wait_for(lambda: time.time() % window < window / 3, what="the start of a window")
        end = (time.time() // window + 1) * window
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b'{"A1":%d,"A2":0,"A3":0}' % BIG, ("127.0.0.1", port))
        last = wait_for(
            lambda: svc.status()["subsystems"]["metrics"]["last_window"],
            until=lambda w, end=end: w and w["timestamp"] >= end,
            what="the window to close",
        )
        res = svc.ctl("status", "--json")
        assert res.returncode == 0, res.stderr
        shown = json.loads(res.stdout)["subsystems"]["metrics"]["last_window"]
        res = svc.ctl("status")  # the table too
        assert res.returncode == 0, res.stderr
        now = svc.status()["subsystems"]["metrics"]["last_window"]
        if last["count"] == 3 and shown["timestamp"] == now["timestamp"] == last["timestamp"]:
            break
    assert last["A1_sum"] == 3 * BIG > 2**64
    assert shown["A1_sum"] == 3 * BIG
    assert svc.proc.poll() is None
    assert svc.status()["service"]["state"] == "running"


def connect_many(path: Path, n: int) -> tuple[list[socket.socket], int]:
    """Open ``n`` idle connections to the control socket; return them and how many failed."""
    held, failed = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            wait_for(lambda s=s: s.connect_ex(str(path)) != errno.EAGAIN, 5, "backlog room")
            s.getpeername()  # raises if the connection failed otherwise
        except (OSError, AssertionError):
            s.close()
            failed += 1
            continue
        held.append(s)
    return held, failed


def test_over_a_thousand_idle_connections_do_not_stop_the_supervisor(start_service, tmp_path):
    """select() fails on a descriptor past 1023; the oldest idle connections make room."""
    svc = start_service(metrics=metrics_table(tmp_path))
    held, failed = connect_many(svc.socket, 1100)
    try:
        assert failed == 0
        assert svc.proc.poll() is None
        status = svc.status()
        assert status["service"]["state"] == "running"
        assert status["service"]["control"]["clients"] <= control.MAX_CLIENTS
        assert status["service"]["control"]["dropped"] >= 1000
    finally:
        for s in held:
            s.close()
    assert svc.proc.poll() is None
    assert svc.ctl("status").returncode == 0


def test_idle_connections_are_dropped_after_the_timeout(start_service, tmp_path):
    timeout = 1.5  # [service] control_timeout, 5 s by default
    svc = start_service(service={"control_timeout": timeout}, metrics=metrics_table(tmp_path))
    held, failed = connect_many(svc.socket, 3)
    assert failed == 0
    try:
        started = time.monotonic()
        for s in held:
            s.settimeout(timeout + 10)
            assert s.recv(10) == b""  # closed by the service
        assert time.monotonic() - started > timeout - 0.5
        assert svc.status()["service"]["control"]["dropped"] == 3
    finally:
        for s in held:
            s.close()


def test_out_of_file_descriptors_on_accept_is_survived_and_state_saved_on_stop(
    start_service, tmp_path
):
    svc = start_service(metrics=metrics_table(tmp_path))
    open_fds = len(os.listdir(f"/proc/{svc.pid}/fd"))
    _, hard = resource.prlimit(svc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(svc.pid, resource.RLIMIT_NOFILE, (open_fds + 8, hard))
    held, _ = connect_many(svc.socket, 200)
    try:
        wait_for(lambda: "cannot accept" in svc.log(), what="accept to run out of descriptors")
        assert svc.proc.poll() is None
        assert svc.status()["service"]["state"] == "running"
        assert svc.stop() == 0
    finally:
        for s in held:
            s.close()
    log = svc.log()
    assert "cannot accept (Too many open files" in log
    assert "saved open window(s)" in log
    assert (Path(svc.tables["service"]["state_dir"]) / "metrics-state.json").exists()
