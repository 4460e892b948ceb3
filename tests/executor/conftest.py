"""The ``executor`` fixture: a router and shards in real processes, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skns import config
from skns.ports import free_port

from .exec_support import Executor


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Callable[..., Executor]]:
    """``executor(**keys)``: start a router and 2 shards with these [executor] keys."""
    started: list[Executor] = []

    def start(**keys: Any) -> Executor:
        table = {
            "listen": f"127.0.0.1:{free_port()}",
            "shards": 2,
            "handler": "skns.executor.handlers:record",
            "duration": 0.0,
            **keys,
        }
        settings = config.parse(
            {
                "service": {
                    "state_dir": str(tmp_path / "state"),
                    "control_socket": str(tmp_path / "run" / "control.sock"),
                    "log_level": "warning",
                },
                "executor": table,
            },
            tmp_path / "config.toml",
        )
        ex = Executor(settings)
        started.append(ex)
        ex.family.start()
        ex.family.wait_ready()
        return ex

    yield start
    for ex in started:
        ex.family.stop()
