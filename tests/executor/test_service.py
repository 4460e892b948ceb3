"""The executor as a family of processes: its specs, a crash of all of it, the real service."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from helpers import wait_for
from skns import config
from skns.executor import router, service, shard
from skns.executor.checker import verify
from skns.executor.handlers import read_records
from skns.ports import free_port

from .exec_support import send_events


def test_children_are_one_router_and_k_shards(tmp_path: Path) -> None:
    settings = config.parse({"executor": {"shards": 3}}, tmp_path / "c.toml")
    specs = service.children(settings)
    assert [(s.role, s.index) for s in specs] == [
        ("executor-router", 0),
        ("executor-shard", 0),
        ("executor-shard", 1),
        ("executor-shard", 2),
    ]
    assert specs[0].target is router.run
    assert all(s.target is shard.run for s in specs[1:])
    default = service.children(config.parse({}, tmp_path / "c.toml"))
    assert len(default) == 1 + (os.cpu_count() or 1)


def test_kill_9_the_whole_family_mid_run(executor: Any) -> None:
    ex = executor(duration=0.05)
    rng = random.Random(11)
    accounts = [rng.randrange(40) for _ in range(1000)]
    with ex.connect() as ws:
        acked = send_events(ws, accounts)
    wait_for(lambda: len(ex.records()) > 100, 10, "a first part to finish")
    for name in ("executor-router 0", "executor-shard 0", "executor-shard 1"):
        ex.family.kill(name, signal.SIGKILL)
    assert len(ex.records()) < len(accounts)
    ex.family.start()
    ex.family.wait_ready()
    more = [rng.randrange(40) for _ in range(200)]
    with ex.connect() as ws:
        later = send_events(ws, more, start=len(accounts))
    # Seqs keep increasing across the router's crash: new events queue behind old ones.
    assert min(later) > max(acked)
    acked.update(later)
    verdict = verify(acked, ex.wait_done(len(acked)), exactly_once=False)
    assert verdict.ok, verdict.summary()
    wait_for(lambda: sum(s.get("replayed", 0) for s in ex.shard_stats()), 5, "replay in stats")


def test_through_the_real_service(start_service: Any) -> None:
    port = free_port()
    svc = start_service(
        executor={
            "listen": f"127.0.0.1:{port}",
            "shards": 2,
            "handler": "skns.executor.handlers:record",
            "duration": 0.0,
        }
    )
    roles = sorted((c["role"], c["index"]) for c in svc.children())
    assert roles == [("executor-router", 0), ("executor-shard", 0), ("executor-shard", 1)]
    accounts = [i % 25 for i in range(500)]
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        acked = send_events(ws, accounts)
    state = Path(svc.tables["service"]["state_dir"]) / "executor"
    runs = wait_for(lambda: len(r := read_records(state)) >= len(accounts) and r, 20, "records")
    verdict = verify(acked, runs)
    assert verdict.ok, verdict.summary()

    def finished() -> list[dict[str, Any]]:
        # Each child publishes every 0.5 s: wait until all of them show the whole run.
        (router_row,) = svc.children("executor-router")
        shards = [c["stats"] or {} for c in svc.children("executor-shard")]
        done = sum(s.get("done", 0) for s in shards)
        accepted = (router_row["stats"] or {}).get("accepted")
        return shards if done == accepted == len(accounts) else []

    shards = wait_for(finished, 10, "status to show the work")
    for stats in shards:
        assert {"accepted", "in_flight", "done", "failed", "backlog", "journal_bytes"} <= set(stats)
    status = svc.ctl("status")
    assert status.returncode == 0, status.stderr
    assert "executor-shard" in status.stdout
