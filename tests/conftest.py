"""Fixtures shared by every test directory.

``start_service(**tables)`` runs the real service (``python -m skns``) as a
subprocess with a config written to a temp dir: every subsystem is off except
the tables given, state and sockets live in the temp dir, and it returns once
every child is up. The service is stopped at the end of the test.

What a test imports (``Service``, ``toml_dumps``) lives in helpers.py: a conftest
module is not for importing (tests/systemd has a conftest of its own, and only one
module can be ``conftest`` in sys.modules).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Service, TinyFs, make

SUBSYSTEMS = ("metrics", "relay", "executor", "messenger", "tasks")


@pytest.fixture(scope="session")
def staged_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make install DESTDIR=...`` of the checkout, built once for the run (a venv build takes
    15-60 s): tests/test_install.py checks this tree (read only: a test that changes one
    copies it), and tests/systemd unpacks its venv in the container, as a package would be."""
    destdir = tmp_path_factory.mktemp("destdir")
    make("install", destdir)
    return destdir


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
        if "cluster" in tables:
            all_tables["cluster"] = tables.pop("cluster")
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


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[int], TinyFs]]:
    """``tiny_fs(size_bytes)`` mounts a tmpfs of that size under tmp_path."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: int) -> TinyFs:
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        mounted.append(path)
        return TinyFs(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
