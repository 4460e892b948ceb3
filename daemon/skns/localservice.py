"""A whole ``python -m skns`` in a directory of its own, for the tests, the benchmarks
and whoever measures a running service from outside.

:class:`Service` writes the config tables it is given as ``config.toml``, starts the
supervisor with its output in ``service.log``, and talks to it through its control
socket; several of them on one machine, each with its own state directory and
ports, are several hosts. Failures raise ``AssertionError``: its callers are tests
and benchmarks, where that is what a failure is.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import control
from .errors import ControlError

T = TypeVar("T")


def wait_for(
    poll: Callable[[], T],
    timeout: float = 20.0,
    what: str = "condition",
    until: Callable[[T], object] = bool,
    interval: float = 0.02,
    show: Callable[[T], str] = repr,
) -> T:
    """Call ``poll`` until ``until`` holds for what it returned (by default: until it returns
    something true); return that value. On timeout the error shows the last value seen, as
    ``show`` renders it (a value polled once more after the deadline counts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = poll()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last seen: {show(value)}"
            )
        time.sleep(interval)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_dumps(tables: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, table in tables.items():
        out.append(f"[{name}]")
        out += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        out.append("")
    return "\n".join(out)


class Service:
    """A running ``python -m skns`` and what it was started with."""

    def __init__(
        self,
        root: Path,
        tables: dict[str, dict[str, Any]],
        env: dict[str, str],
        prefix: tuple[str, ...] = (),
        popen: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.tables = tables
        self.config_path = root / "config.toml"
        self.config_path.write_text(toml_dumps(tables))
        self.socket = Path(tables["service"]["control_socket"])
        self.log_path = root / "service.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "skns", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            **(popen or {}),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return control.request(self.socket, "status")

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(ControlError):
                status = self.status()
                if status["service"]["state"] == "running":
                    return status
            time.sleep(0.05)
        raise AssertionError(f"service not ready in {timeout}s:\n{self.log()}")

    def children(self, role: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.status()["children"] if role is None or c["role"] == role]

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skns.ctl", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self, signo: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signo)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"service did not stop in {timeout}s:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode
