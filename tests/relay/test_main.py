"""``python -m skns.relay``: the one-shot mode of the original task, against the simulator."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson


def one_shot(sim: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skns.relay", "--source", sim.source, "--sink", sim.sink("cli"),
         *args],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_all_messages_in_order_exits_zero_and_prints_the_report(start_sim) -> None:
    sim = start_sim("--count", "5000", "--window", "20", "--late", "0.02", "--delay-ms", "0.5")
    done = one_shot(sim, "--count", "5000")  # first id learned ("auto")
    assert done.returncode == 0, done.stdout + done.stderr
    for label in ("total time", "hold time", "min", "median", "p99", "max", "in order"):
        assert label in done.stdout
    assert "OK: all 5000 messages sent in order" in done.stdout
    status, report = sim.report()
    assert status == 0 and report["complete"] and report["received"] == 5000


def test_fewer_messages_than_asked_for_exits_one(start_sim) -> None:
    sim = start_sim("--count", "1000", "--window", "5")
    done = one_shot(sim, "--count", "1001", "--first-id", "0", "--idle-timeout", "0.5", "--json")
    assert done.returncode == 1
    report = orjson.loads(done.stdout)
    assert report["ok"] is False and report["sent"] == 1000
    assert "sent 1000 of 1001" in report["problems"]


def test_skipped_ids_fail_the_verdict(start_sim) -> None:
    sim = start_sim("--count", "2000", "--drops", "0.01", "--late", "0", "--seed", "3")
    done = one_shot(sim, "--count", "1900", "--first-id", "0", "--gap-timeout-ms", "20", "--json")
    report = orjson.loads(done.stdout)
    assert done.returncode == 1
    assert report["skipped"] > 0 and report["sent"] >= 1900
    assert any("skipped" in p for p in report["problems"])


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "skns.relay", "--source", "ws://x", "--sink", "ws://y",
         "--count", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "--count" in done.stderr


def test_a_bad_simulator_plan_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "skns.relay", "sim", "--port", "0", "--late", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "late must be within 0..1" in done.stderr
