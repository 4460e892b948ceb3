"""A simulator in its own process, for tests that run the relay as a process too."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest


class SimProcess:
    """``python -m skns.relay sim --port 0 --json ...``: its URLs and its final report."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skns.relay", "sim", "--port", "0", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        match = re.match(r"listening on ws://127\.0\.0\.1:(\d+)", first)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"simulator did not start: {first!r} {self.proc.stderr}")
        self.port = int(match.group(1))
        self.source = f"ws://127.0.0.1:{self.port}/raw-messages"

    def sink(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ordered-messages/{name}"

    def report(self, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        """Wait for the simulator to finish; its exit status and its JSON report."""
        out, err = self.proc.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        assert lines, f"no report; stderr: {err}"
        return self.proc.returncode, orjson.loads(lines[-1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(*args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.close()
