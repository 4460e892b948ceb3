"""Frames to the sink, a batch per system call.

``await connection.send(frame)`` per message costs a coroutine, an async
context manager and one ``write`` system call per frame: more than all the
relay's own work on the message. This writer goes one layer down, to the
connection's Sans-I/O protocol (``protocol.send_text``, ``data_to_send``: the
documented websockets Sans-I/O API, the same calls ``send`` makes) and hands
the serialized frames to the transport with one ``writelines`` per batch.
Every message is still its own, complete WebSocket text frame; only the system
calls are shared. Frames are serialized when their batch is written, so that
websockets, writing a control frame of its own in between, never sends ours.

What the sink received. Each written batch goes into the connection's
:class:`~.ledger.Ledger` (plain TCP only); :class:`SinkConnection` counts the
bytes websockets writes itself and, the moment the connection is lost, reads
how many bytes the sink's TCP acknowledged (``TCP_INFO`` ``tcpi_bytes_acked``;
the socket is still open then). The ledger turns that into messages: those
never acknowledged never reached the sink. Now and then (every doubling of the
batches held) a write asks the kernel too, so that the ledger forgets what was
acknowledged and holds only what is in flight.

A batch is written when it is full (``batch`` frames, or ``batch_bytes``: the
relay checks whether the socket backed up after each batch, so a batch of large
frames must not pile far past its high-water mark), when its first frame has
waited ``max_wait_ns``, or at the latest in the next turn of the event
loop (``call_soon``), that is, as soon as the relay has nothing else ready to
do. Under a flood that bounds what batching adds to a frame's hold time; at
a trickle each frame goes out alone, at once.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from .holdtime import HoldTimes
from .ledger import Ledger

_OPEN = State.OPEN
_clock = time.perf_counter_ns
_BATCH_BYTES = 65536  # asyncio's default high-water mark for a transport's write buffer
_PRUNE_FIRST = 64  # batches the ledger holds before a write first asks what was acknowledged

# struct tcp_info (linux/tcp.h): __u64 tcpi_bytes_acked at offset 120, since Linux 4.1.
_TCP_INFO_LEN = 128
_BYTES_ACKED = slice(120, 128)


def bytes_acked(transport: asyncio.BaseTransport) -> int | None:
    """Bytes of the stream the peer's TCP acknowledged, or None where that is not known.

    Not known without a TCP socket, on a kernel without the field, or under TLS,
    where the stream's bytes are not the messages' bytes.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCP_INFO_LEN:
        return None
    return int.from_bytes(info[_BYTES_ACKED], sys.byteorder)


class SinkConnection(ClientConnection):
    """A client connection that keeps a :class:`Ledger` of what it wrote and was acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ledger = Ledger()
        self.acked_at_loss: int | None = None  # bytes_acked when the connection was lost

    def send_data(self) -> None:
        # websockets' own writes (the upgrade request, control frames) share the
        # byte stream with the messages: count them, or offsets would drift.
        self.ledger.other(sum(map(len, self.protocol.writes)))
        super().send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        # The last moment the socket is open: the transport closes it after this.
        self.acked_at_loss = bytes_acked(self.transport)
        super().connection_lost(exc)


class BatchWriter:
    """Writes frames to one sink connection; records each frame's hold time when written."""

    __slots__ = (
        "_first",
        "_frames",
        "_ledger",
        "_on_written",
        "_protocol",
        "_prune_at",
        "_received",
        "_scheduled",
        "_size",
        "_syn",
        "_transport",
        "batch",
        "batch_bytes",
        "connection",
        "holds",
        "lost",
        "max_wait_ns",
        "written",
    )

    def __init__(
        self,
        connection: SinkConnection,
        holds: HoldTimes,
        on_written: Callable[[int, int, int], None],
        batch: int = 32,
        max_wait_ns: int = 20_000,
        batch_bytes: int = _BATCH_BYTES,
    ) -> None:
        self.connection = connection
        self.holds = holds
        self.batch = batch
        self.batch_bytes = batch_bytes
        self.max_wait_ns = max_wait_ns
        self._first = 0  # clock when the batch's first frame was added
        self._on_written = on_written  # (frames, their bytes, clock at the end of the write)
        self._protocol = connection.protocol
        self._transport = connection.transport
        self._frames: list[bytes] = []  # the messages not yet written
        self._received: list[int] = []  # and the receipt clock of each
        self._size = 0  # and their bytes
        self._scheduled = False
        # The ledger, where the kernel says what the sink acknowledged (plain TCP on Linux).
        acked = bytes_acked(self._transport)
        self._ledger = None if acked is None else connection.ledger
        # The kernel counts the SYN as an acknowledged byte; the sink's answer to the
        # upgrade acknowledged the whole request: what is beyond the ledger is the SYN.
        self._syn = 0 if acked is None else acked - connection.ledger.out
        self._prune_at = _PRUNE_FIRST
        self.written = 0
        self.lost = 0  # frames for this connection not written: it was closing

    @property
    def open(self) -> bool:
        return self._protocol.state is _OPEN and not self._transport.is_closing()

    @property
    def backed_up(self) -> bool:
        """The socket takes less than we write: wait for ``connection.drain()``."""
        high = self._transport.get_write_buffer_limits()[1]
        return self._transport.get_write_buffer_size() > high

    def add(self, frame: bytes, received: int) -> bool:
        """Queue ``frame`` (UTF-8 JSON) as a text frame; True if that filled and wrote a batch."""
        self._frames.append(frame)
        self._size += len(frame)
        pending = self._received
        pending.append(received)
        if len(pending) == 1:
            self._first = _clock()
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._write_soon)
        elif (
            len(pending) >= self.batch
            or self._size >= self.batch_bytes
            or _clock() - self._first >= self.max_wait_ns
        ):
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
        frames = self._frames
        if self.open:
            protocol = self._protocol
            send_text = protocol.send_text
            for frame in frames:
                send_text(frame)
            data = protocol.data_to_send()
            ledger = self._ledger
            if ledger is not None:
                extra = len(data) - len(frames)  # a control frame queued before ours, if any
                if extra:
                    ledger.other(sum(map(len, data[:extra])))
                ledger.messages(data[extra:] if extra else data)
                if len(ledger) > self._prune_at:
                    self._prune(ledger)
            self._transport.writelines(data)
        else:  # closing since they were added: sent (never twice), and lost
            self.lost += len(frames)
        frames.clear()
        end = _clock()
        self.holds.add_until(end, pending)
        n = len(pending)
        pending.clear()
        size = self._size
        self._size = 0
        self.written += n
        self._on_written(n, size, end)

    def _acked(self) -> int | None:
        """Bytes of the ledger's stream the sink acknowledged, now (None: not known)."""
        acked = bytes_acked(self._transport)
        return None if acked is None else acked - self._syn

    def _prune(self, ledger: Ledger) -> None:
        acked = self._acked()
        if acked is not None:
            ledger.acknowledged(acked)
        # Ask again once the ledger doubles: a syscall per many batches, however slow the sink.
        self._prune_at = max(_PRUNE_FIRST, 2 * len(ledger))

    def unconfirmed(self) -> int:
        """Messages written to this connection, now lost, that the sink surely never got.

        Those its TCP never acknowledged, where that is known; else those
        written after the transport had closed.
        """
        acked = self.connection.acked_at_loss
        if self._ledger is None or acked is None:
            return self.lost
        return self._ledger.unconfirmed(acked - self._syn) + self.lost
