"""The executor's JetStream names and this host's instance id (no NATS needed)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from skns.executor import jetstream


def test_subjects_and_keys() -> None:
    assert jetstream.subject(5) == "skns.exec.5"
    assert jetstream.key(5) == "p5"
    assert jetstream.holder_host("a/1/123") == "a"
    assert jetstream.holder_host(None) is None


def test_the_instance_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = jetstream.instance_id(tmp_path / "executor")
    assert len(first) == 32
    assert jetstream.instance_id(tmp_path / "executor") == first
    assert jetstream.instance_id(tmp_path / "other") != first  # another state dir: another host


def test_processes_starting_at_once_agree_on_one_instance_id(tmp_path: Path) -> None:
    found: list[str] = []
    threads = [
        threading.Thread(target=lambda: found.append(jetstream.instance_id(tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1
    assert sorted(os.listdir(tmp_path)) == ["instance"]  # no temporary file left
