"""Frames to the sink, a batch per system call.

``await connection.send(frame)`` per message costs a coroutine, an async
context manager and one ``write`` system call per frame: more than all the
relay's own work on the message. This writer goes one layer down, to the
connection's Sans-I/O protocol (``protocol.send_text``, ``data_to_send``: the
documented websockets Sans-I/O API, the same calls ``send`` makes) and hands
the serialized frames to the transport with one ``writelines`` per batch.
Every message is still its own, complete WebSocket text frame; only the system
calls are shared.

A batch is written when it is full (``batch`` frames), when its first frame
has waited ``max_wait_ns``, or at the latest in the next turn of the event
loop (``call_soon``), that is, as soon as the relay has nothing else ready to
do. Under a flood that bounds what batching adds to a frame's hold time; at
a trickle each frame goes out alone, at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from .holdtime import HoldTimes

_OPEN = State.OPEN
_clock = time.perf_counter_ns


class BatchWriter:
    """Writes frames to one sink connection; records each frame's hold time when written."""

    __slots__ = (
        "_first",
        "_on_written",
        "_protocol",
        "_received",
        "_scheduled",
        "_transport",
        "batch",
        "connection",
        "holds",
        "lost",
        "max_wait_ns",
        "written",
    )

    def __init__(
        self,
        connection: ClientConnection,
        holds: HoldTimes,
        on_written: Callable[[int, int], None],
        batch: int = 32,
        max_wait_ns: int = 20_000,
    ) -> None:
        self.connection = connection
        self.holds = holds
        self.batch = batch
        self.max_wait_ns = max_wait_ns
        self._first = 0  # clock when the batch's first frame was added
        self._on_written = on_written  # (frames, clock at the end of the write)
        self._protocol = connection.protocol
        self._transport = connection.transport
        self._received: list[int] = []  # receipt clock of each frame not yet written
        self._scheduled = False
        self.written = 0
        self.lost = 0  # frames framed for this connection after its transport closed

    @property
    def open(self) -> bool:
        return self._protocol.state is _OPEN and not self._transport.is_closing()

    @property
    def backed_up(self) -> bool:
        """The socket takes less than we write: wait for ``connection.drain()``."""
        high = self._transport.get_write_buffer_limits()[1]
        return self._transport.get_write_buffer_size() > high

    def add(self, frame: bytes, received: int) -> bool:
        """Frame ``frame`` (UTF-8 JSON) as a text frame; True if that filled and wrote a batch."""
        self._protocol.send_text(frame)
        pending = self._received
        pending.append(received)
        if len(pending) == 1:
            self._first = _clock()
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._write_soon)
        elif len(pending) >= self.batch or _clock() - self._first >= self.max_wait_ns:
            self.write()
            return True
        return False

    def _write_soon(self) -> None:
        self._scheduled = False
        if self._received:
            self.write()

    def write(self) -> None:
        """Write every framed message with one system call; record their hold times."""
        pending = self._received
        if not pending:
            return
        data = self._protocol.data_to_send()
        if self._transport.is_closing():
            self.lost += len(pending)
        else:
            self._transport.writelines(data)
        end = _clock()
        self.holds.add_until(end, pending)
        n = len(pending)
        pending.clear()
        self.written += n
        self._on_written(n, end)
