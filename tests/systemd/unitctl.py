"""skns as installed in the container: make install/uninstall, systemctl, its files."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nspawn import Container

from helpers import wait_for

UNIT = "skns-metrics.service"
CONFIG = "/etc/skns/config.toml"
OUTPUT = "/var/lib/skns/metrics.jsonl"
VENV = "/usr/local/lib/skns/venv"
VENV_PYTHON = f"{VENV}/bin/python"
# What the tests run under: 1 s windows (so that a test sees several close), a 5 s interval
# merged from them, the rest of the installed defaults (every subsystem on its default port:
# the container has its own loopback).
WINDOW = 1
INTERVALS = (1, 5)
# Figures the tests report (boot time, loss tables), printed at the end of the run.
REPORT: list[str] = []
SHOW = (
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "Result",
    "ExecMainStatus",
    "StatusText",
    "UnitFileState",
)


class Unit:
    """skns-metrics.service inside one container."""

    def __init__(self, machine: Container) -> None:
        self.machine = machine

    # ---- install ------------------------------------------------------------------------------

    def installed(self) -> bool:
        return (self.machine.root / "etc/systemd/system" / UNIT).exists() and (
            self.machine.root / VENV_PYTHON.lstrip("/")
        ).exists()

    def make(self, target: str, timeout: float = 300.0) -> str:
        proc = self.machine.run("make", "-C", "/src", target, timeout=timeout)
        return proc.stdout + proc.stderr

    def unpack(self, staged: Path) -> None:
        """The venv of ``make install DESTDIR=staged`` at its final path, as a package would
        unpack it (it was built for that path): newer than the sources, so make install here
        keeps it, as on tests/sandbox/machine.py's pretend machine."""
        venv = self.machine.root / VENV.lstrip("/")
        if venv.exists():
            return
        venv.parent.mkdir(parents=True, exist_ok=True)
        # cp -a: a third of shutil.copytree's time for the venv's 4,000 files.
        subprocess.run(["cp", "-a", str(staged / VENV.lstrip("/")), str(venv)], check=True)
        (venv / ".skns-built").touch()

    def configure(self, window: float = WINDOW, intervals: tuple[float, ...] = INTERVALS) -> bool:
        """Give the installed config this window and intervals; True when it changed."""
        text = self.machine.read(CONFIG)
        wanted = re.sub(r"(?m)^window = \S+", f"window = {window:g}", text, count=1)
        wanted = re.sub(
            r"(?m)^intervals = \[[^]]*\]",
            "intervals = [" + ", ".join(f"{i:g}" for i in intervals) + "]",
            wanted,
            count=1,
        )
        metrics = tomllib.loads(wanted)["metrics"]
        assert (metrics["window"], tuple(metrics["intervals"])) == (window, intervals), metrics
        if wanted == text:
            return False
        self.machine.write(CONFIG, wanted)
        return True

    # ---- systemctl ----------------------------------------------------------------------------

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        proc = self.machine.run("systemctl", *args, check=check, timeout=timeout)
        return proc.stdout + proc.stderr

    def show(self) -> dict[str, str]:
        out = self.machine.run("systemctl", "show", UNIT, *(f"-p{p}" for p in SHOW)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait(
        self, predicate: Callable[[dict[str, str]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, str]:
        """The unit's properties once predicate(properties) holds (the journal's tail if not)."""
        return wait_for(
            self.show,
            timeout,
            f"{UNIT} {what}",
            until=predicate,
            interval=0.1,
            show=lambda props: f"{props}\n{self.journal(lines=30)}",
        )

    def wait_running(self, not_pid: int = 0, timeout: float = 30.0) -> dict[str, str]:
        """Active, running (READY=1 was received) under a main pid other than not_pid."""
        return self.wait(
            lambda p: (
                p["ActiveState"] == "active"
                and p["SubState"] == "running"
                and int(p["MainPID"]) not in (0, not_pid)
            ),
            f"running with a main pid other than {not_pid}",
            timeout,
        )

    def ensure_running(self) -> dict[str, str]:
        """Running with the test config: restarted if the config had to change."""
        changed = self.configure()
        # Every start counts against StartLimitBurst=, manual ones too: the tests start the
        # unit more often than that in two minutes, so each begins with a fresh count.
        self.systemctl("reset-failed", UNIT, check=False)
        props = self.show()
        if changed or props["ActiveState"] != "active":
            self.systemctl("restart", UNIT)
        return self.wait_running()

    def journal(self, since: float | None = None, lines: int | None = None) -> str:
        args = ["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"]
        if since is not None:
            args.append(f"--since=@{since:.6f}")
        if lines is not None:
            args.append(f"--lines={lines}")
        return self.machine.run(*args, check=False).stdout

    def now(self) -> float:
        """The clock journalctl --since compares with (the host's: one kernel)."""
        return time.time()

    # ---- the service's own view ---------------------------------------------------------------

    def ctl(self, *args: str, check: bool = True) -> str:
        return self.machine.run("skns-ctl", *args, check=check).stdout

    def status(self) -> dict[str, Any]:
        return json.loads(self.ctl("status", "--json"))

    def wait_lines(
        self, predicate: Callable[[list[dict[str, Any]]], Any], what: str, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """metrics.jsonl once predicate(lines) holds."""
        return wait_for(
            self.lines,
            timeout,
            f"{what} in {OUTPUT}",
            until=predicate,
            interval=0.2,
            show=lambda lines: repr(lines[-6:]),
        )

    def lines(self) -> list[dict[str, Any]]:
        """metrics.jsonl, parsed (a missing file is no lines)."""
        path = self.machine.root / OUTPUT.lstrip("/")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


# ---- metrics.jsonl arithmetic --------------------------------------------------------------


def base_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if x["count_type"] == f"{WINDOW:g}s"]


def merge(parts: list[dict[str, Any]]) -> dict[str, int]:
    """The longer-interval figures that the base lines parts add up to (zeros if none)."""
    full = [p for p in parts if p["count"]]
    if not full:
        return {"A1_sum": 0, "A2_max": 0, "A3_min": 0, "count": 0}
    return {
        "A1_sum": sum(p["A1_sum"] for p in full),
        "A2_max": max(p["A2_max"] for p in full),
        "A3_min": min(p["A3_min"] for p in full),
        "count": sum(p["count"] for p in full),
    }


def merge_mismatches(lines: list[dict[str, Any]], start: int = 0) -> list[str]:
    """From line start on: every longer-interval line that is not the merge of the base lines
    it spans, and every longer interval that ended between the first and the last base line
    but has no line (its running totals were lost)."""
    bases = base_lines(lines)
    recent = lines[start:]
    wrong = []
    if base_lines(recent):
        first, last = base_lines(recent)[0]["timestamp"], base_lines(recent)[-1]["timestamp"]
        for seconds in INTERVALS[1:]:
            ends = {x["timestamp"] for x in recent if x["count_type"] == f"{seconds:g}s"}
            for end in range(math.ceil(first / seconds) * seconds, math.floor(last) + 1, seconds):
                if end not in ends:
                    wrong.append(f"no {seconds:g}s line at {end}")
    for longer in recent:
        seconds = float(longer["count_type"].removesuffix("s"))
        if seconds == WINDOW:
            continue
        end = longer["timestamp"]
        expected = merge([b for b in bases if end - seconds < b["timestamp"] <= end])
        got = {key: longer[key] for key in expected}
        if got != expected:
            wrong.append(f"{longer['count_type']} line at {end}: {got}, its base lines {expected}")
    return wrong


def repeated_windows(lines: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(interval, timestamp) of every window written more than once."""
    seen: set[tuple[str, float]] = set()
    repeated = []
    for x in lines:
        key = (x["count_type"], x["timestamp"])
        if key in seen:
            repeated.append(key)
        seen.add(key)
    return repeated
