"""Run the executor's processes without the supervisor: for the benchmark and the tests.

Each child is forked and goes through :func:`skns.child.enter`, exactly as the
supervisor runs it, with its own shared-memory slot; :class:`Family` can kill
one (any signal, ``SIGKILL`` included) and start it again, and reads the stats
the children publish.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import orjson

from ..child import ChildSpec, enter
from ..config import Settings
from ..shm import SlotTable
from . import service


class Family:
    """The router and shards of one configuration, each in a forked process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs: list[ChildSpec] = service.children(settings)
        self._table = SlotTable(len(self.specs))
        self.pids: dict[str, int] = {}

    def __enter__(self) -> Family:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def shards(self) -> int:
        return len(self.specs) - 1

    def _spec(self, name: str) -> tuple[int, ChildSpec]:
        for i, spec in enumerate(self.specs):
            if spec.name == name:
                return i, spec
        raise KeyError(name)

    def start(self, *names: str) -> None:
        """Fork the named children (default: all that are not running)."""
        for i, spec in enumerate(self.specs):
            if (names and spec.name not in names) or spec.name in self.pids:
                continue
            # As the supervisor does: a fresh slot, so stale stats of a dead child don't count.
            self._table.slots[i].reset()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                status = 1
                try:
                    status = enter(spec, self.settings, self._table.slots[i])
                finally:
                    os._exit(status)
            self.pids[spec.name] = pid

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int:
        """Send ``sig`` to a child and reap it; returns its wait status."""
        pid = self.pids.pop(name)
        os.kill(pid, sig)
        return self._reap(pid, timeout)

    def _reap(self, pid: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return os.waitpid(pid, 0)[1]
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every child, then SIGKILL what is left after ``timeout``."""
        pids = list(self.pids.values())
        self.pids.clear()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            self._reap(pid, timeout)

    def stats(self) -> dict[str, dict[str, Any]]:
        """What each child last published, by name ("executor-shard 0", ...)."""
        found: dict[str, dict[str, Any]] = {}
        for i, spec in enumerate(self.specs):
            blob = self._table.slots[i].read()
            if blob:
                found[spec.name] = orjson.loads(blob)
        return found

    def router(self) -> dict[str, Any]:
        return self.stats().get("executor-router 0", {})

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the router is connected to every shard (their journals are replayed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    del self.pids[name]
                    raise RuntimeError(f"{name} exited with status {status} while starting")
            if self.router().get("shards_connected") == self.shards:
                return
            time.sleep(0.02)
        raise TimeoutError(f"executor not ready after {timeout} s: {self.stats()}")
