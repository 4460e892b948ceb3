"""The messenger's children, and the messenger inside the real service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from skns import config
from skns.messenger import replica, service
from skns.ports import free_port

from .httpclient import post

STATS_KEYS = {
    "store",
    "batching",
    "requests",
    "ok",
    "bad_request",
    "unavailable",
    "internal_error",
    "transactions",
    "failed_transactions",
    "mean_batch",
    "largest_batch",
    "transaction_seconds",
    "last_unavailable",
}


def test_one_replica_per_listen_address(tmp_path: Path) -> None:
    table = {"listen": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}
    specs = service.children(config.parse({"messenger": table}, tmp_path / "c.toml"))
    assert [(s.subsystem, s.role, s.index) for s in specs] == [
        ("messenger", "messenger", 0),
        ("messenger", "messenger", 1),
        ("messenger", "messenger", 2),
    ]
    assert all(s.target is replica.run for s in specs)


def test_through_the_real_service(start_service: Any) -> None:
    ports = [free_port(), free_port()]
    svc = start_service(messenger={"listen": [f"127.0.0.1:{p}" for p in ports]})
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    seqs = []
    for i in range(6):
        status, answer = post(urls[i % 2], {"sender": f"u{i % 3}", "text": f"m{i}"})
        assert status == 200, answer
        seqs.append(answer["messages"][-1]["seq"])
    assert seqs == list(range(1, 7))  # one SQLite database in the state dir, both replicas
    assert (Path(svc.tables["service"]["state_dir"]) / replica.SQLITE_FILE).exists()
    assert post(urls[0], b"[]")[0] == 400
    deadline = time.monotonic() + 10
    while True:
        children = svc.children("messenger")
        stats = [c["stats"] or {} for c in children]
        if sum(s.get("ok", 0) for s in stats) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [c["name"] for c in children] == ["messenger 0", "messenger 1"]
    assert all(set(s) >= STATS_KEYS for s in stats), stats
    assert sum(s["ok"] for s in stats) == 6
    assert sum(s["bad_request"] for s in stats) == 1
    assert {s["store"] for s in stats} == {"sqlite"}
