"""The control socket: answers carry any figure exact, and no client can stop the service."""

from __future__ import annotations

import json
import socket
import time

from helpers import metrics_port, metrics_table, wait_for

BIG = 9223372036854775807  # the largest A1 a datagram may carry


def test_status_carries_a_sum_past_64_bits_exact(start_service, tmp_path):
    window = 3.0
    svc = start_service(metrics=metrics_table(tmp_path, window=window, intervals=[window]))
    port = metrics_port(svc)
    # All three datagrams in one window: start early in one.
    wait_for(lambda: time.time() % window < window / 3, what="the start of a window")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(b'{"A1":%d,"A2":0,"A3":0}' % BIG, ("127.0.0.1", port))
    last = wait_for(
        lambda: (w := svc.status()["subsystems"]["metrics"]["last_window"]) and w["count"] and w,
        what="the window to close",
    )
    assert last["A1_sum"] == 3 * BIG > 2**64
    res = svc.ctl("status")
    assert res.returncode == 0, res.stderr
    res = svc.ctl("status", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["subsystems"]["metrics"]["last_window"]["A1_sum"] == 3 * BIG
    assert svc.proc.poll() is None
    assert svc.status()["service"]["state"] == "running"
