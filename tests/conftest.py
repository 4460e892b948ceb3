"""Fixtures shared by every test directory.

``start_service(**tables)`` runs the real service (``python -m skns``) as a
subprocess with a config written to a temp dir: every subsystem is off except
the tables given, state and sockets live in the temp dir, and it returns once
every child is up. The service is stopped at the end of the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skns import control
from skns.errors import ControlError

SUBSYSTEMS = ("metrics", "relay", "executor", "messenger", "tasks")


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


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start the real service; tables not given are disabled. Keyword ``env`` adds variables."""
    started: list[Service] = []

    def start(
        env: dict[str, str] | None = None, wait: bool = True, **tables: dict[str, Any]
    ) -> Service:
        root = tmp_path / f"svc{len(started)}"
        root.mkdir()
        service = {
            "state_dir": str(root / "state"),
            "control_socket": str(root / "run" / "control.sock"),
            "log_level": "info",
            **tables.pop("service", {}),
        }
        all_tables: dict[str, dict[str, Any]] = {"service": service}
        for name in SUBSYSTEMS:
            table = tables.pop(name, None)
            all_tables[name] = {"enabled": False} if table is None else {"enabled": True, **table}
        if tables:
            raise TypeError(f"unknown tables {sorted(tables)}")
        run_env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
        }
        run_env.update(env or {})
        svc = Service(root, all_tables, run_env)
        started.append(svc)
        if wait:
            svc.wait_ready()
        return svc

    yield start
    for svc in started:
        if svc.proc.poll() is None:
            svc.stop(timeout=30)
