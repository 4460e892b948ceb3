"""The tasks subsystem in the supervisor: its one child, and the real service end to end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import psutil
from websockets.sync.client import connect

from skns import config
from skns.ports import free_port
from skns.tasks import server, service


def test_children_are_one_server(tmp_path: Path) -> None:
    settings = config.parse({}, tmp_path / "c.toml")
    (spec,) = service.children(settings)
    assert (spec.subsystem, spec.role, spec.index) == ("tasks", "tasks", 0)
    assert spec.target is server.run


def test_through_the_real_service(start_service: Any) -> None:
    port = free_port()
    svc = start_service(tasks={"listen": f"127.0.0.1:{port}", "soft_workers": 1, "hard_workers": 1})
    with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        ws.send(json.dumps({"type": "factorial", "number": 30}))
        task_id = json.loads(ws.recv(timeout=10))["task_id"]
        assert json.loads(ws.recv(timeout=10)) == {
            "type": "success",
            "task_id": task_id,
            "result": math.factorial(30),
        }
    (child,) = svc.children("tasks")
    # The workers are the server's children: grandchildren of the supervisor.
    titles = [" ".join(p.cmdline()).strip() for p in psutil.Process(child["pid"]).children()]
    assert sorted(titles) == [
        "skns-metrics: tasks-worker hard 0",
        "skns-metrics: tasks-worker soft 0",
    ]
    deadline = time.monotonic() + 10
    while True:
        (child,) = svc.children("tasks")
        stats = child["stats"] or {}
        if stats.get("soft", {}).get("done") == 1:
            break
        assert time.monotonic() < deadline, child
        time.sleep(0.1)
    assert stats["submitted"] == 1 and stats["hard"]["workers"] == 1
    workers = [p.pid for p in psutil.Process(child["pid"]).children()]
    assert svc.stop() == 0
    assert not any(psutil.pid_exists(pid) for pid in workers)


def test_results_and_queued_jobs_survive_a_restart(start_service: Any) -> None:
    port = free_port()
    svc = start_service(tasks={"listen": f"127.0.0.1:{port}", "soft_workers": 1, "hard_workers": 1})
    url = f"ws://127.0.0.1:{port}/"
    with connect(url, max_size=None) as ws:
        ws.send(json.dumps({"type": "factorial", "number": 30}))
        done_id = json.loads(ws.recv(timeout=10))["task_id"]
        assert json.loads(ws.recv(timeout=10))["type"] == "success"
        # One hard worker: these queue behind each other (each some tenths of a second).
        waiting = []
        for _ in range(4):
            ws.send(json.dumps({"type": "factorial", "number": 120_000}))
            waiting.append(json.loads(ws.recv(timeout=10))["task_id"])
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    assert "took up 5 task(s) from before the restart" in svc.log()
    with connect(url, max_size=None) as ws:
        ws.send(json.dumps({"type": "result", "task_id": done_id}))
        assert json.loads(ws.recv(timeout=10)) == {
            "type": "success",
            "task_id": done_id,
            "result": math.factorial(30),
        }
        for task_id in waiting:
            ws.send(json.dumps({"type": "result", "task_id": task_id}))
            frame = str(ws.recv(timeout=10))
            if '"success"' not in frame[:40]:  # still queued or running: pushed when done
                assert json.loads(frame)["task_id"] == task_id, frame
                frame = str(ws.recv(timeout=60))
            assert frame.startswith('{"type":"success","task_id":"' + task_id), frame[:80]
