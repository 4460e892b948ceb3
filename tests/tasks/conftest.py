"""Task servers for the tests: real processes on free loopback ports.

``server`` is shared by a module: a hard limit of 0.5 s (factorial of 300000
runs well past it), one hard worker, two soft ones. Tests that need another
configuration start their own with ``make_server``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from skns.tasks.local import LocalServer, local_settings

HARD_LIMIT = 0.5
LONG_JOB = 300_000  # about 2 s of work: always past HARD_LIMIT


def server_settings(state_dir: Path, **tasks: Any) -> Any:
    defaults: dict[str, Any] = {
        "hard_limit": HARD_LIMIT,
        "soft_workers": 2,
        "hard_workers": 1,
        "max_number": 400_000,
    }
    return local_settings(state_dir, **{**defaults, **tasks})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(server_settings(tmp_path_factory.mktemp("tasks"))) as running:
        yield running


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LocalServer]]:
    started: list[LocalServer] = []

    def make(**tasks: Any) -> LocalServer:
        running = LocalServer(server_settings(tmp_path, **tasks))
        started.append(running)
        running.start()
        return running

    yield make
    for running in started:
        running.__exit__(None, None, None)


@pytest.fixture
def client(server: LocalServer) -> Iterator[Callable[[], ClientConnection]]:
    """Opens connections to ``server``; all are closed at the end of the test."""
    with contextlib.ExitStack() as stack:

        def open_one() -> ClientConnection:
            return stack.enter_context(connect(server.url, max_size=None, open_timeout=10))

        yield open_one
