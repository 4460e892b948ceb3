"""The control socket: one JSON request per connection, one JSON answer.

Request: ``{"command": "status" | "reload" | "reopen"}`` followed by a newline.
Answer: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``, then the
server closes the connection. The supervisor serves it from its own loop,
without threads: sockets are non-blocking and watched by its ``select``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import jsonexact
from .errors import ControlError, ServiceNotRunning

MAX_REQUEST = 4096
# A client that has not sent its request within this is dropped.
CLIENT_TIMEOUT = 5.0

Handler = Callable[[str], dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        path.parent.mkdir(parents=True, exist_ok=True)
        self._unlink_stale()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o660)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.clients: dict[socket.socket, tuple[bytearray, float]] = {}

    def _unlink_stale(self) -> None:
        """Remove a socket file left by a dead supervisor; refuse if one is alive."""
        if not self.path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)
        else:
            raise ControlError(f"another skns is running (it answers on {self.path})")
        finally:
            probe.close()

    def fds(self) -> list[socket.socket]:
        return [self.sock, *self.clients]

    def handle(self, ready: list[Any]) -> None:
        if self.sock in ready:
            self._accept()
        now = time.monotonic()
        for client in list(self.clients):
            if client in ready:
                self._read(client)
            elif now - self.clients[client][1] > CLIENT_TIMEOUT:
                self._drop(client)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            self.clients[client] = (bytearray(), time.monotonic())

    def _read(self, client: socket.socket) -> None:
        buf, _ = self.clients[client]
        try:
            data = client.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        buf += data
        if b"\n" not in buf and data and len(buf) < MAX_REQUEST:
            return
        del self.clients[client]
        answer = self._answer(bytes(buf))
        try:
            client.setblocking(True)
            client.settimeout(2.0)
            client.sendall(jsonexact.dumps(answer, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        except OSError:
            pass
        finally:
            client.close()

    def _answer(self, raw: bytes) -> dict[str, Any]:
        try:
            request = jsonexact.loads(raw.split(b"\n", 1)[0])
            command = request["command"]
            if not isinstance(command, str):
                raise TypeError
        except (jsonexact.JSONDecodeError, KeyError, TypeError):
            return {"ok": False, "error": 'bad request: expected {"command": "..."}'}
        return self.handler(command)

    def _drop(self, client: socket.socket) -> None:
        self.clients.pop(client, None)
        client.close()

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(path: Path, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the supervisor at ``path`` and return its answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ServiceNotRunning(f"skns is not running (no answer on {path}: {exc})") from None
        except PermissionError as exc:
            raise ControlError(f"cannot open {path}: {exc}") from None
        sock.sendall(jsonexact.dumps({"command": command}) + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        raise ControlError(f"no answer on {path} within {timeout}s") from None
    finally:
        sock.close()
    try:
        answer = jsonexact.loads(b"".join(chunks))
    except jsonexact.JSONDecodeError as exc:
        raise ControlError(f"bad answer on {path}: {exc}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"bad answer on {path}: not an object")
    return answer
