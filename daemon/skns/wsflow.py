"""WebSocket connections that stop reading while they cannot write.

``websockets`` answers every ping with a pong written straight to the transport,
whatever the transport's write buffer holds: a peer that floods pings and never
reads makes the buffer grow without bound (100 MB in ten seconds on loopback) and
keeps the event loop busy writing pongs nobody reads, long enough to miss the
child's heartbeat. Its flow control pauses reading only for a full message queue.

Here reading from the transport is also paused while the transport's write buffer
is above its high-water mark (``pause_writing``) and resumed once it drains
(``resume_writing``): a peer is read no faster than it reads. A peer that never
reads is then not read either; websockets' keepalive (its ping unanswered, since
the pong is not read) or the peer's own close ends the connection.

The two reasons to pause are tracked apart, so that the message queue draining
does not resume reading while the write buffer is still full, nor the reverse.
"""

from __future__ import annotations

import asyncio
from typing import cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection

from .wshttp import RefusingServerConnection


class _ReadGate:
    """Reading is paused while any reason to pause holds."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: set[str] = set()

    def hold(self, reason: str) -> None:
        if not self._held and not self._transport.is_closing():
            self._transport.pause_reading()
        self._held.add(reason)

    def release(self, reason: str) -> None:
        if reason not in self._held:
            return
        self._held.discard(reason)
        if not self._held and not self._transport.is_closing():
            self._transport.resume_reading()


class _Paced(Connection):
    _gate: _ReadGate | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        gate = self._gate = _ReadGate(cast(asyncio.Transport, transport))
        self.recv_messages.pause = lambda: gate.hold("queue")
        self.recv_messages.resume = lambda: gate.release("queue")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._gate is not None:
            self._gate.hold("write")

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._gate is not None:
            self._gate.release("write")


class PacedServerConnection(_Paced, RefusingServerConnection):
    """``serve(..., create_connection=PacedServerConnection)``; refuses plain HTTP clearly
    (:mod:`skns.wshttp`)."""


class PacedClientConnection(_Paced, ClientConnection):
    """``connect(..., create_connection=PacedClientConnection)``."""
