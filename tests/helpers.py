"""Small helpers shared by the tests (importable as ``helpers``: tests/ is on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

# A whole service in a directory of its own: in the package, for the benchmarks too.
from skns.localservice import Service as Service
from skns.localservice import toml_dumps as toml_dumps
from skns.localservice import toml_value as toml_value
from skns.localservice import wait_for as wait_for

REPO = Path(__file__).resolve().parents[1]


def make(target: str, destdir: Path, *options: str) -> str:
    """``make TARGET DESTDIR=destdir`` in the checkout; its output (a failure fails the test)."""
    proc = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", *options, target, f"DESTDIR={destdir}"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"make {target} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


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


class TinyFs:
    """A tmpfs of a few KiB, and a filler file that takes up its free space."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def fill(self) -> None:
        """Take every free byte (the next write anywhere on it fails with ENOSPC)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 256, 16, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError:
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def assert_too_many(url: str, limit: int) -> None:
    """A WebSocket handshake to ``url`` gets the 503 of a server at its connection limit."""
    try:
        with connect(url, open_timeout=10):
            pass
    except InvalidStatus as exc:
        response = exc.response
    else:
        raise AssertionError(f"{url} accepted a connection past its limit of {limit}")
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {"error": "too many connections", "limit": limit}


def admitted(url: str) -> bool:
    """Whether a WebSocket handshake to ``url`` succeeds now (a 503 is a no)."""
    try:
        with connect(url, open_timeout=10):
            return True
    except InvalidStatus as exc:
        assert exc.response.status_code == 503
        return False
