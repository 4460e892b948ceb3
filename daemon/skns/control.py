"""The control socket: one JSON request per connection, one JSON answer.

Request: ``{"command": "status" | "reload" | "reopen"}`` followed by a newline.
Answer: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``, then the
server closes the connection. The supervisor serves it from its own loop,
without threads: every socket is non-blocking and registered with the
supervisor's selector (epoll: no limit on fd numbers, unlike select()).

No client can hold up the supervisor or exhaust it: at most ``MAX_CLIENTS``
connections are kept (a new one pushes out the oldest, so a flood of idle
connections cannot lock the operator out), a connection that has not finished
within the timeout ``poll`` is given (``[service] control_timeout``) is dropped,
answers are written without blocking, and running out of file descriptors on
accept (EMFILE) drops the oldest connection and pauses accepting for a moment
instead of failing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from . import jsonexact
from .errors import ControlError, ServiceNotRunning
from .listeners import claim, listening

if TYPE_CHECKING:
    from .fdstore import FdStore

log = logging.getLogger("skns.control")

FDNAME = "control"  # in the fd store
MAX_REQUEST = 4096
MAX_CLIENTS = 64
# After accept() ran out of file descriptors (or kernel memory), wait this long.
ACCEPT_PAUSE = 0.1
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

_OPTIONS = orjson.OPT_NON_STR_KEYS

Handler = Callable[[str], dict[str, Any]]
OnFault = Callable[[str, Exception], None]


class _Client:
    __slots__ = ("inbox", "outbox", "since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.since = time.monotonic()
        self.inbox = bytearray()
        self.outbox: memoryview | None = None  # set once the request is answered


class ControlServer:
    """Serves the control socket through ``selector``: each registered key's ``data`` is
    the callable to run when its socket is ready; ``poll`` must run every loop turn. An
    exception from ``handler`` is answered as an internal error and passed to
    ``on_fault``."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        selector: selectors.BaseSelector,
        on_fault: OnFault,
        store: FdStore | None = None,
    ) -> None:
        self.path = path
        self.handler = handler
        self.on_fault = on_fault
        self.selector = selector
        # Kept across a restart like the service's ports: a client asking meanwhile waits
        # in the backlog and is answered by the next run, instead of "not running".
        self.sock = claim(store, FDNAME, socket.SOCK_STREAM, path) or self._bind(store)
        self.clients: dict[socket.socket, _Client] = {}  # oldest first
        self.accept_paused_until: float | None = None
        self.dropped = 0  # connections pushed out by newer ones or timed out
        self.accept_errors = 0
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def _bind(self, store: FdStore | None) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._unlink_stale()
        sock = listening(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), str(self.path), 64,
                         store, FDNAME)  # fmt: skip
        os.chmod(self.path, 0o660)  # the service's group may ask too
        return sock

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

    # -- events ----------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):  # bounded: a flood must not starve the loop
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                if not self._out_of_resources(exc):
                    return
                continue
            sock.setblocking(False)
            if len(self.clients) >= MAX_CLIENTS:
                self._drop(next(iter(self.clients)))
            client = _Client(sock)
            self.clients[sock] = client
            self.selector.register(sock, selectors.EVENT_READ, lambda c=client: self._ready(c))
            self._read(client)  # a client such as skns-ctl has sent its request already

    def _out_of_resources(self, exc: OSError) -> bool:
        """accept() found no file descriptor (or memory) for a connection. Free one by
        dropping the oldest client and say to try again; with none to drop, stop accepting
        for a moment rather than spin on a listening socket that stays readable."""
        self.accept_errors += 1
        if self.accept_errors == 1 or self.accept_errors % 1000 == 0:
            log.warning(
                "control socket: cannot accept (%s; %d times so far)",
                os.strerror(exc.errno or 0),
                self.accept_errors,
            )
        if self.clients:
            self._drop(next(iter(self.clients)))
            return True
        self.selector.unregister(self.sock)
        self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
        return False

    def _ready(self, client: _Client) -> None:
        if client.outbox is None:
            self._read(client)
        else:
            self._write(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client.sock)
            return
        client.inbox += data
        if b"\n" not in client.inbox and data and len(client.inbox) < MAX_REQUEST:
            return
        try:
            answer = jsonexact.dumps(self._answer(bytes(client.inbox)), option=_OPTIONS)
        except Exception as exc:
            # Whatever the command raised, the client gets an answer and the loop goes on.
            self.on_fault("control request", exc)
            error = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
            answer = jsonexact.dumps(error, option=_OPTIONS)
        client.outbox = memoryview(answer + b"\n")
        self.selector.modify(client.sock, selectors.EVENT_WRITE, lambda: self._ready(client))
        self._write(client)

    def _write(self, client: _Client) -> None:
        assert client.outbox is not None
        try:
            sent = client.sock.send(client.outbox)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client.sock)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._close(client.sock)

    def _answer(self, raw: bytes) -> dict[str, Any]:
        try:
            request = jsonexact.loads(raw.split(b"\n", 1)[0])
            command = request["command"]
            if not isinstance(command, str):
                raise TypeError
        except (jsonexact.JSONDecodeError, KeyError, TypeError):
            return {"ok": False, "error": 'bad request: expected {"command": "..."}'}
        return self.handler(command)

    def poll(self, client_timeout: float) -> None:
        """Drop clients that have not sent their request and read the answer within
        ``client_timeout`` seconds; take up accepting again after a pause."""
        now = time.monotonic()
        while self.clients:
            oldest = next(iter(self.clients.values()))
            if now - oldest.since <= client_timeout:
                break
            self._drop(oldest.sock)
        if self.accept_paused_until is not None and now >= self.accept_paused_until:
            self.accept_paused_until = None
            self.selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def status(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "dropped": self.dropped,
            "accept_errors": self.accept_errors,
        }

    # -- closing ---------------------------------------------------------------

    def _drop(self, sock: socket.socket) -> None:
        self.dropped += 1
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        if self.clients.pop(sock, None) is not None:
            self.selector.unregister(sock)
        sock.close()

    def close_clients(self) -> None:
        """Drop every connection (frees their file descriptors for the way down)."""
        for sock in list(self.clients):
            self._close(sock)

    def close(self, kept: bool = False) -> None:
        """Close; ``kept``: a copy of the socket goes on to the next run (a restart in
        place), so its file stays."""
        self.close_clients()
        if self.accept_paused_until is None:
            self.selector.unregister(self.sock)
        self.sock.close()
        if not kept:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def request(path: Path, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the supervisor at ``path`` and return its answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        try:
            _connect(sock, path, deadline)
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
    except ConnectionResetError as exc:
        raise ControlError(f"the service closed {path} without an answer: {exc}") from None
    finally:
        sock.close()
    if not chunks:  # it was killed, or stopped before reading the request
        raise ControlError(f"the service closed {path} without an answer")
    try:
        answer = jsonexact.loads(b"".join(chunks))
    except jsonexact.JSONDecodeError as exc:
        raise ControlError(f"bad answer on {path}: {exc}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"bad answer on {path}: not an object")
    return answer


def _connect(sock: socket.socket, path: Path, deadline: float) -> None:
    """Connect, waiting while the listen backlog is full (a Unix socket with a timeout
    answers EAGAIN at once then, instead of waiting)."""
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            time.sleep(0.01)
