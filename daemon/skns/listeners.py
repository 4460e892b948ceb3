"""Listening sockets that belong to the supervisor.

The supervisor binds every listening socket once (TCP here, the metrics UDP
sockets in :mod:`skns.metrics.sockets`) and its children inherit them across
the fork. A child that dies or is restarted therefore never closes the port:
clients connecting meanwhile wait in the listen backlog, and the next child
accepts them. Registered in the :class:`~skns.fdstore.FdStore`, the sockets also
outlive the supervisor's own restart.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import HostPort

if TYPE_CHECKING:
    from .child import ChildSpec
    from .fdstore import FdStore

log = logging.getLogger("skns.listeners")

# The kernel caps it at net.core.somaxconn (4096 by default). A client finding the
# queue full is not refused: its SYN goes unanswered and it retries.
BACKLOG = 4096


def family_of(address: HostPort) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address.host else socket.AF_INET


def bound_to(sock: socket.socket, kind: socket.SocketKind, address: HostPort | Path) -> bool:
    """Is ``sock`` a ``kind`` socket bound where ``address`` says (port 0: any port; a
    path: a Unix socket whose file is still there)?"""
    try:
        if sock.type != kind:
            return False
        if kind == socket.SOCK_STREAM and not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            return False
        if isinstance(address, Path):
            return (
                sock.family == socket.AF_UNIX
                and sock.getsockname() == str(address)
                and stat.S_ISSOCK(os.stat(address).st_mode)
            )
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        host, port = sock.getsockname()[:2]
        wanted = {info[4][0] for info in socket.getaddrinfo(address.host, None, sock.family, kind)}
    except OSError:
        return False
    return host in wanted and (address.port == 0 or port == address.port)


def claim(
    store: FdStore | None, name: str, kind: socket.SocketKind, address: HostPort | Path
) -> socket.socket | None:
    """The socket passed from before the restart under ``name``, if it still fits
    ``address``; one that does not is closed and removed from the store."""
    fd = store.take(name) if store is not None else None
    if fd is None:
        return None
    sock = socket.socket(fileno=fd)
    if bound_to(sock, kind, address):
        sock.setblocking(False)
        log.info("%s: kept the socket on %s from before the restart", name, address)
        return sock
    log.info("%s: the kept socket is not bound to %s any more: binding anew", name, address)
    assert store is not None
    store.forget(name)
    sock.close()
    return None


def serve_args(address: HostPort, listener: socket.socket | None) -> dict[str, Any]:
    """Where an asyncio server listens: the supervisor's socket, or ``address`` to bind
    (run outside the supervisor: tests, benchmarks)."""
    if listener is not None:
        return {"sock": listener}
    return {"host": address.host, "port": address.port}


def tcp_listener(store: FdStore | None, name: str, address: HostPort) -> socket.socket:
    """A non-blocking listening TCP socket on ``address``: the kept one or a new one
    (registered in ``store`` under ``name``)."""
    sock = claim(store, name, socket.SOCK_STREAM, address)
    if sock is not None:
        return sock
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    return listening(sock, (address.host, address.port), BACKLOG, store, name)


def listening(
    sock: socket.socket, address: Any, backlog: int, store: FdStore | None, name: str
) -> socket.socket:
    """``sock`` bound to ``address`` (SO_REUSEADDR: no wait for a port's old connections;
    nothing for a Unix socket), listening, non-blocking, and registered in ``store`` under
    ``name``; closed if any step fails."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    if store is not None:
        store.keep(name, sock.fileno())
    return sock


class Listeners:
    """The supervisor's TCP listening sockets, one per child spec with ``listen``, by
    their fd-store name; bound when a child first needs one, rebound when its address
    changes (reload)."""

    def __init__(self, store: FdStore | None) -> None:
        self.store = store
        self.sockets: dict[str, socket.socket] = {}

    def get(self, spec: ChildSpec) -> socket.socket | None:
        """The listening socket for ``spec``; None when it has no ``listen`` or binding it
        failed (logged: the child then binds itself, and fails as it would have)."""
        if spec.listen is None:
            return None
        name = spec.fdname
        sock = self.sockets.get(name)
        if sock is not None and bound_to(sock, socket.SOCK_STREAM, spec.listen):
            return sock
        self.discard(name)
        try:
            sock = tcp_listener(self.store, name, spec.listen)
        except OSError as exc:
            log.error("%s: cannot listen on %s: %s", spec.name, spec.listen, exc)
            return None
        self.sockets[name] = sock
        return sock

    def discard(self, name: str) -> None:
        """Close ``name`` for good: its address changed or its child is gone."""
        sock = self.sockets.pop(name, None)
        if sock is not None:
            if self.store is not None:
                self.store.forget(name)
            sock.close()

    def keep_only(self, names: set[str]) -> None:
        for name in set(self.sockets) - names:
            self.discard(name)

    def close(self) -> None:
        """Close this process's copies (at stop: a kept copy in the fd store stays)."""
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
