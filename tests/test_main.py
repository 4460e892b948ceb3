"""``python -m skns`` as the service runs it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from helpers import metrics_port, metrics_table, wait_for
from skns.ports import free_port


def test_state_files_are_not_world_readable_whatever_the_umask(start_service, tmp_path):
    """Chat messages, executor journals, metrics output and state: 0640 files, 0750
    directories at most, after a real run started with umask 0 (the service was 0644 under
    systemd's default UMask=0022)."""
    ports = {name: free_port() for name in ("executor", "messenger", "tasks")}
    old = os.umask(0)
    try:
        svc = start_service(
            metrics=metrics_table(tmp_path / "out"),
            executor={"listen": f"127.0.0.1:{ports['executor']}", "shards": 1, "duration": 0.0},
            messenger={"listen": [f"127.0.0.1:{ports['messenger']}"]},
            tasks={"listen": f"127.0.0.1:{ports['tasks']}", "soft_workers": 1, "hard_workers": 1},
        )
    finally:
        os.umask(old)
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
        b'{"A1": 1, "A2": 2, "A3": 3}', ("127.0.0.1", metrics_port(svc))
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports['messenger']}/messages",
        data=json.dumps({"sender": "ann", "text": "a secret"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    with connect(f"ws://127.0.0.1:{ports['executor']}/", open_timeout=10) as ws:
        ws.send(json.dumps({"account_id": 1, "payload": {}}))
        assert "ack" in json.loads(ws.recv(timeout=10))
    with connect(f"ws://127.0.0.1:{ports['tasks']}/", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "factorial", "number": 5}))
        ws.recv(timeout=10)
        assert json.loads(ws.recv(timeout=10))["result"] == 120
    out = tmp_path / "out" / "metrics.jsonl"
    wait_for(lambda: out.exists() and out.stat().st_size, what="a metrics line")
    state = Path(svc.tables["service"]["state_dir"])
    running = modes(state, out.parent)
    assert any(p.endswith("messenger.sqlite3-wal") for p in running), (
        running
    )  # SQLite's log, while it runs
    assert svc.stop() == 0
    stopped = modes(state, out.parent)
    assert {"metrics-state.json", "metrics.jsonl"} <= {Path(p).name for p in stopped}
    for name, mode in {**running, **stopped}.items():
        limit = 0o750 if stat.S_ISDIR(mode) else 0o640
        assert stat.S_IMODE(mode) & ~limit == 0, f"{name}: {oct(stat.S_IMODE(mode))}"


def modes(*roots: Path) -> dict[str, int]:
    """Every path under the roots (the roots too), by name, with its st_mode."""
    return {str(p): p.lstat().st_mode for root in roots for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'[relay]\nname = "caf\xe9"\n', "not UTF-8: byte 0xe9 on line 2"),
        (None, "is a directory"),
        (b'[executor]\nhandler = "skns.executor.handlers:slep"\n', "has no slep"),
    ],
)
def test_a_config_that_cannot_be_used_at_start_exits_2_without_a_traceback(
    tmp_path, content, words
):
    path = tmp_path / "config.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    res = subprocess.run(
        [sys.executable, "-m", "skns", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert words in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.stderr
