"""Run a task server in a forked process outside the supervisor.

The tests and the benchmark need a real server (and its worker pools) on a free
loopback port without the whole service. :class:`LocalServer` forks a process
that runs exactly what the supervisor would run (:func:`skns.child.enter` with
the tasks child spec), or any other server function (the benchmark's
baseline), waits until ``GET /health`` answers 200, and stops it with SIGTERM.
The stats the child publishes are readable through :meth:`LocalServer.stats`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .. import config
from ..child import enter
from ..config import Settings
from ..ports import free_port
from ..shm import SlotTable
from .service import children
from .worker import die_with_parent


def local_settings(
    state_dir: Path,
    log_level: str = "warning",
    cluster: dict[str, Any] | None = None,
    **tasks: Any,
) -> Settings:
    """Settings with the task server on a free loopback port; other ``[tasks]`` keys as given,
    and the ``[cluster]`` table when given (cluster mode)."""
    table = {"listen": f"127.0.0.1:{free_port()}", **tasks}
    service = {
        "state_dir": str(state_dir),
        "control_socket": str(state_dir / "run" / "control.sock"),
        "log_level": log_level,
    }
    return config.parse(
        {"service": service, "tasks": table, "cluster": cluster or {}}, state_dir / "local.toml"
    )


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class LocalServer:
    """The task server of ``settings`` (or ``target()``) in its own forked process."""

    def __init__(self, settings: Settings, target: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self._target = target
        self._slots = SlotTable(1)
        self.process: multiprocessing.process.BaseProcess | None = None

    @property
    def url(self) -> str:
        listen = self.settings.tasks.listen
        return f"ws://{listen.host}:{listen.port}/"

    @property
    def health_url(self) -> str:
        listen = self.settings.tasks.listen
        return f"http://{listen.host}:{listen.port}/health"

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        (spec,) = children(self.settings)
        slot = self._slots.slots[0]
        target = self._target

        parent = os.getpid()

        def run() -> None:
            if target is None:
                os._exit(enter(spec, self.settings, slot))  # dies with its parent itself
            die_with_parent(signal.SIGTERM, parent)
            os._exit(target())

        # Not a daemonic process: the baseline server starts a ProcessPoolExecutor.
        self.process = multiprocessing.get_context("fork").Process(target=run, name="tasks")
        self.process.start()
        deadline = time.monotonic() + timeout
        while not healthy(self.health_url):
            if not self.process.is_alive():
                raise RuntimeError(f"task server exited with {self.process.exitcode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"task server not healthy after {timeout} s")
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        blob = self._slots.slots[0].read()
        return orjson.loads(blob) if blob else {}

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        self.process = None
        return process.exitcode

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._slots.close()
