"""Run messenger replicas as forked processes outside the supervisor.

The benchmark and the tests need real replica processes on free loopback
ports without the whole service: :class:`LocalReplicas` forks one process per
listen address, runs exactly what the supervisor would run in it
(:func:`skns.child.enter` with the messenger's child specs), waits until each
answers ``GET /healthz`` with 200, and stops them with SIGTERM.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .. import config
from ..child import ChildSpec, enter
from ..config import Settings
from ..ports import free_ports
from ..shm import Slot, SlotTable
from .service import children


def local_settings(state_dir: Path, dsn: str = "", replicas: int = 2, **messenger: Any) -> Settings:
    """Settings for ``replicas`` replicas on free loopback ports; other keys as given."""
    table = {
        "enabled": True,
        "listen": [f"127.0.0.1:{port}" for port in free_ports(replicas)],
        "dsn": dsn,
        **messenger,
    }
    service = {
        "state_dir": str(state_dir),
        "control_socket": str(state_dir / "run" / "control.sock"),
        "log_level": "warning",
    }
    return config.parse({"service": service, "messenger": table}, state_dir / "local.toml")


def _child(spec: ChildSpec, settings: Settings, slot: Slot) -> None:
    """In the forked process: what the supervisor does after its fork."""
    os._exit(enter(spec, settings, slot))


class LocalReplicas:
    """The replicas of ``settings.messenger``, each in its own forked process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = children(settings)
        self.slots = SlotTable(len(self.specs))
        self.processes: list[multiprocessing.process.BaseProcess] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://{a.host}:{a.port}" for a in self.settings.messenger.listen]

    def start(self, timeout: float = 30.0, healthy: bool = True) -> None:
        """Fork the replicas; return once each answers ``/healthz`` with 200 (or, without
        ``healthy``, accepts connections: for replicas whose database is down)."""
        ctx = multiprocessing.get_context("fork")
        for spec, slot in zip(self.specs, self.slots.slots, strict=True):
            process = ctx.Process(
                target=_child,
                args=(spec, self.settings, slot),
                name=f"messenger-{spec.index}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)
        deadline = time.monotonic() + timeout
        ready = is_healthy if healthy else is_listening
        for url, process in zip(self.urls, self.processes, strict=True):
            while not ready(url):
                if not process.is_alive():
                    raise RuntimeError(f"replica {url} exited with {process.exitcode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {url} not healthy after {timeout} s")
                time.sleep(0.05)

    def stats(self) -> list[bytes | None]:
        return [slot.read() for slot in self.slots.slots]

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        self.processes.clear()

    def __enter__(self) -> LocalReplicas:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # The slots stay mapped: the replicas' final counters are read after the stop.
        self.stop()


# Loopback only: never through a proxy named in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the replica at ``url`` answers ``GET /healthz`` with 200."""
    try:
        with _opener.open(f"{url}/healthz", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def is_listening(url: str) -> bool:
    """True when the replica at ``url`` accepts TCP connections."""
    address = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((address.hostname, address.port), timeout=1.0):
            return True
    except OSError:
        return False
