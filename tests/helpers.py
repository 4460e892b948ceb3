"""Small helpers shared by the tests (importable as ``helpers``: tests/ is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metrics_table(tmp: Path, **extra: Any) -> dict[str, Any]:
    """A [metrics] table for tests: 2 workers on a free port, 0.5 s windows, output in tmp."""
    return {
        "listen": "127.0.0.1:0",
        "workers": 2,
        "window": 0.5,
        "intervals": [0.5],
        "output": str(tmp / "metrics.jsonl"),
        **extra,
    }


def metrics_port(svc: Any) -> int:
    """The UDP port a started service's metrics workers listen on."""
    return int(svc.status()["subsystems"]["metrics"]["listen"].rpartition(":")[2])


# Runs the command after it with LISTEN_PID set to its own pid (exec keeps the shell's).
AS_LISTEN_PID = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"]


def passing_fds(fds: dict[str, int], env: dict[str, str]) -> dict[str, Any]:
    """Popen keywords that start a process as systemd passes its fd store (put
    ``AS_LISTEN_PID`` before the command): ``fds`` placed at 3.., named in ``env``."""
    from skns.fdstore import pass_on

    env["LISTEN_FDS"] = str(len(fds))
    env["LISTEN_FDNAMES"] = ":".join(fds)

    def place() -> None:
        pass_on(fds, {})

    # Popen closes every other fd after preexec_fn: keep the ones placed.
    return {"preexec_fn": place, "pass_fds": tuple(range(3, 3 + len(fds)))}
