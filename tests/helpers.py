"""Small helpers shared by the tests (importable as ``helpers``: tests/ is on sys.path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response
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


# Plain HTTP on a WebSocket port (skns.wshttp): the request, and the status it must get.
PLAIN_HTTP = {
    "get": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426),
    "post": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405),
    "garbage": (b"\x16\x03\x01\x00\xa5 not http\r\n\r\n", 400),
    "large": (b"GET / HTTP/1.1\r\n" + b"X-A: %s\r\n" % (b"a" * 8000) * 8 + b"\r\n", 431),
}


def plain_http(port: int, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``request`` to 127.0.0.1:``port``; the status, headers and JSON body of the answer
    that ends with the server's close (a reset or no answer fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), answer
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json", answer
    assert headers["Connection"] == "close", answer
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_refuses_plain_http(port: int) -> None:
    """A WebSocket port answers each of PLAIN_HTTP with its status and ``{"error": str}``."""
    for name, (request, status) in PLAIN_HTTP.items():
        got, headers, body = plain_http(port, request)
        assert got == status, (name, got, body)
        assert isinstance(body["error"], str) and body["error"], (name, body)
        if status == 426:
            assert headers["Upgrade"] == "websocket"


def health(connection: ServerConnection, request: Request) -> Response | None:
    """A WebSocket server's ``process_request`` hook: ``GET /health`` answers 200 "ok"."""
    if request.path != "/health":
        return None
    return Response(200, "OK", Headers([("Content-Length", "2")]), b"ok")


async def echo(ws: ServerConnection) -> None:
    """A WebSocket server's handler that sends every message back."""
    async for message in ws:
        await ws.send(message)
