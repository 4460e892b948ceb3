"""The relay: one WebSocket client reading the source, one writing the sink.

The source side reads frames, takes each one's id (:mod:`.message`), and pushes
it into the :class:`~.reorder.ReorderBuffer`; a run that the push completes
goes through the outbox to the sink's :class:`~.writer.BatchWriter` right
there, in the same task, with no hand-over to another task (a task switch per
message costs more than the rest of the relay's work on that message). A timer
expires gaps; a sink reconnect drains the outbox. When the sink's socket backs
up, one drain runs at a time and the source is not read until it catches up,
so the backlog waits in the source's socket, not in our memory.

Memory is bounded in bytes, whatever the frames weigh (up to ``_MAX_FRAME``
each). What the relay holds (status ``held_bytes``: the reorder buffer, the
outbox, the batch not yet written) stays under ``buffer_limit_bytes`` plus one
frame: past it the source is not read until the sink takes enough, so TCP
pushes back on the source, and nothing accepted is dropped. The reorder buffer
alone past it (a missing id waited for, with the sink keeping up) cannot be
relieved by waiting, since the missing id may be behind in the source's
unread stream: it skips its oldest gap (:mod:`.reorder`), counted and logged.
websockets' queue of frames read but not yet taken is bounded to a quarter of
the limit, and what the sink's socket has not taken to one batch past its
high-water mark (:mod:`.writer`).

Either side reconnects on its own with backoff; the buffer and the outbox
live in the relay, not in a connection, so nothing received is lost while the
process lives. A message counts as sent once it was written to a sink
connection; it is never written again, even if that connection then fails (at
most once, never twice, never out of order).

Hold time is measured per message from the moment ``recv`` handed us the
frame to the end of the write that put it on the sink's socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..ratelimit import RateGate
from ..wsflow import PacedClientConnection
from .holdtime import HoldTimes
from .message import BAD_ID, MISSING_ID, NOT_JSON, NOT_OBJECT, REPEATED_ID, message_id
from .reorder import BELOW_SENT, BELOW_START, DUPLICATE, ReorderBuffer
from .settings import BUFFER_LIMIT_BYTES, RelaySettings
from .writer import BatchWriter, SinkConnection

log = logging.getLogger("skns.relay")

DROP_REASONS = (
    NOT_JSON,
    NOT_OBJECT,
    MISSING_ID,
    BAD_ID,
    REPEATED_ID,
    DUPLICATE,
    BELOW_SENT,
    BELOW_START,
)
OUTLIER = "outlier"  # a stray id below the stream, dropped when the first id was learned
OVERFLOW = "full"  # the reorder buffer was full: its oldest gap skipped (a log line's kind)

# Frames websockets may queue before it stops reading the socket; large enough
# that a burst is read in one go, small enough to bound memory per connection:
# at most this many, and no more than a quarter of buffer_limit_bytes of frames
# of the largest size.
_MAX_QUEUE = 1024
_MAX_FRAME = 2**20  # the largest source frame (websockets' max_size; larger: close 1009)
_LOG_EVERY = 10.0  # seconds between two log lines of a kind (a malformed frame, a full buffer)
# Connection failures worth a retry; anything else is a bug and propagates.
_RETRY = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)

_OUTBOX_HIGH = 256  # released messages waiting for a busy drain before reading pauses
_CLOSE_WAIT = 5.0  # seconds a stop waits for the drain in progress
_clock = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux, nanoseconds


def _frame_size(item: tuple[bytes, int]) -> int:
    return len(item[0])


def _run_size(run: list[tuple[bytes, int]]) -> int:
    return sum([len(frame) for frame, _ in run])


class Backoff:
    """Reconnect delays: ``first`` seconds, doubling up to ``most``; reset on success."""

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class Relay:
    """Relays ``source`` to ``sink`` in id order until stopped (or ``count`` are sent)."""

    def __init__(
        self,
        source: str,
        sink: str,
        *,
        first_id: int | None = None,
        gap_timeout_ms: int = 0,
        settle_ms: int = 200,
        buffer_limit: int = 1_000_000,
        buffer_limit_bytes: int = BUFFER_LIMIT_BYTES,
        reconnect_backoff_ms: int = 100,
        reconnect_backoff_max_ms: int = 5000,
        count: int | None = None,
    ) -> None:
        self.source_url = source
        self.sink_url = sink
        self.count = count
        self.settle_ms = settle_ms
        self.buffer: ReorderBuffer[tuple[bytes, int]] = ReorderBuffer(
            first_id,
            gap_timeout=gap_timeout_ms * 1_000_000,
            limit=buffer_limit,
            limit_bytes=buffer_limit_bytes,
            size=_frame_size,
            settle=settle_ms * 1_000_000,
        )
        self.limit_bytes = buffer_limit_bytes
        self._max_queue = max(1, min(_MAX_QUEUE, buffer_limit_bytes // 4 // _MAX_FRAME))
        # Bytes of the messages released by the buffer and not yet written to the sink
        # (outbox and the writer's batch); with the buffer's own, what the relay holds.
        self._pipe_bytes = 0
        self._room = asyncio.Event()  # set when a write took some of the pipe
        self.source_pauses = 0  # times the source was not read for the limit in bytes
        self._overflows_seen = 0
        self._gate = RateGate(_LOG_EVERY)
        self.holds = HoldTimes()
        self._backoff = (reconnect_backoff_ms / 1000, reconnect_backoff_max_ms / 1000)
        self._outbox: collections.deque[tuple[bytes, int]] = collections.deque()
        self._sink: ClientConnection | None = None
        self._source: ClientConnection | None = None
        self._writer: BatchWriter | None = None  # for the sink connection now open
        self._draining = False
        self._drained = asyncio.Event()  # set while no drain runs
        self._drained.set()
        self._sink_seen = asyncio.Event()  # the sink has been connected once
        self._closing = False  # we are closing the sink ourselves: not a drop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._done = asyncio.Event()  # count reached
        # Messages the count still lets through to the outbox (None: no count). A run
        # is cut to it where it is released, so the sink gets exactly ``count``.
        self._left = count
        self.past_count = 0  # messages released after the count was filled: not sent
        self.received = 0
        self.sent = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.source_connects = 0
        self.sink_connects = 0
        # Messages counted as sent on a sink connection that then died, which the
        # sink surely never got: its TCP never acknowledged them (see writer.py).
        # Those it acknowledged reached the sink's host; only a clean close
        # handshake confirms that the sink read them.
        self.sink_unconfirmed = 0
        self.sink_drops = 0  # sink connections that ended without our clean close
        self.sink_close_code: int | None = None  # of the last sink connection we closed
        self.first_receipt: int | None = None
        self.last_receipt: int | None = None
        self.last_send: int | None = None

    @classmethod
    def from_settings(cls, settings: RelaySettings, count: int | None = None) -> Relay:
        first_id = settings.first_id if isinstance(settings.first_id, int) else None
        return cls(
            settings.source,
            settings.sink_url,
            first_id=first_id,
            gap_timeout_ms=settings.gap_timeout_ms,
            settle_ms=settings.settle_ms,
            buffer_limit=settings.buffer_limit,
            buffer_limit_bytes=settings.buffer_limit_bytes,
            reconnect_backoff_ms=settings.reconnect_backoff_ms,
            reconnect_backoff_max_ms=settings.reconnect_backoff_max_ms,
            count=count,
        )

    # -- running

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set or ``count`` messages are sent; then close cleanly."""
        source = asyncio.create_task(self._source_loop(), name="relay-source")
        sink = asyncio.create_task(self._sink_loop(), name="relay-sink")
        stopping = asyncio.create_task(stop.wait())
        done = asyncio.create_task(self._done.wait())
        try:
            await asyncio.wait((source, sink, stopping, done), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (source, stopping, done):
                task.cancel()
            if self._timer is not None:
                self._timer.cancel()
            await self._close_sink(sink)
            await asyncio.gather(source, return_exceptions=True)  # its connection ends
            for task in (source, sink):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]

    async def _close_sink(self, sink_task: asyncio.Task[None]) -> None:
        """Let the drain in progress finish, close the sink with a handshake, end its task."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), _CLOSE_WAIT)
        ws = self._sink
        if ws is not None:
            if self._writer is not None:
                self._writer.write()  # the last batch goes before the close frame
            # The close handshake returns once the sink has read all we wrote.
            self._closing = True
            await ws.close()
            self.sink_close_code = ws.close_code
        sink_task.cancel()
        await asyncio.gather(sink_task, return_exceptions=True)

    async def _source_loop(self) -> None:
        # Reading before the sink is up would only fill the outbox: wait for it once.
        await self._sink_seen.wait()
        backoff = Backoff(*self._backoff)
        while True:
            try:
                async with connect(
                    self.source_url,
                    create_connection=PacedClientConnection,  # see skns.wsflow
                    proxy=None,
                    compression=None,
                    max_queue=self._max_queue,
                    max_size=_MAX_FRAME,
                    open_timeout=10,
                ) as ws:
                    self._source = ws
                    self.source_connects += 1
                    log.info("source connected: %s", self.source_url)
                    backoff.reset()
                    try:
                        await self._read(ws)  # returns once the count is filled
                    finally:
                        # We read no more (count filled, relay stopping, connection
                        # lost). The source's answer to a close frame would queue
                        # behind frames we no longer read, so a closing handshake
                        # could only time out: end the TCP connection now.
                        ws.transport.abort()
            except InvalidURI:
                raise
            except _RETRY as exc:
                log.warning("source %s: %s", self.source_url, exc or type(exc).__name__)
            finally:
                self._source = None
            if self._left == 0:
                break
            await asyncio.sleep(backoff.next())
        await self._done.wait()  # the count is filled: until its last write (run ends us)

    async def _sink_loop(self) -> None:
        backoff = Backoff(*self._backoff)
        while True:
            try:
                async with connect(
                    self.sink_url,
                    proxy=None,
                    compression=None,
                    open_timeout=10,
                    create_connection=SinkConnection,
                ) as ws:
                    self._sink = ws
                    self._writer = BatchWriter(ws, self.holds, self._written)
                    self._sink_seen.set()
                    self.sink_connects += 1
                    log.info("sink connected: %s", self.sink_url)
                    backoff.reset()
                    if not self._draining and self._pump():
                        await self._drain()
                    # The sink has nothing to say to us; reading notices its close.
                    async for _ in ws:
                        pass
                    if not self._closing:
                        log.warning("sink %s closed the connection", self.sink_url)
            except InvalidURI:
                raise
            except _RETRY as exc:
                log.warning("sink %s: %s", self.sink_url, exc or type(exc).__name__)
            finally:
                writer = self._writer
                if writer is not None:
                    self.sink_unconfirmed += writer.unconfirmed()
                    closed = self._closing and writer.connection.close_code == 1000
                    self.sink_drops += not closed
                self._sink = None
                self._writer = None
            await asyncio.sleep(backoff.next())

    # -- the hot path

    async def _read(self, ws: ClientConnection) -> None:
        recv = ws.recv
        buffer = self.buffer
        push = buffer.push
        outbox = self._outbox
        dropped = self.dropped
        clock = _clock
        counting = self._left is not None
        limit_bytes = self.limit_bytes
        if self.first_receipt is None:
            self.first_receipt = clock()
        while self._left != 0:
            frame = await recv(False)
            now = clock()
            self.received += 1
            self.last_receipt = now
            id_ = message_id(frame)
            if type(id_) is str:
                dropped[id_] += 1
                self._malformed(id_, frame)
                continue
            run = push(id_, (frame, now), now)
            if type(run) is str:
                dropped[run] += 1
                continue
            if self._timer_at is not None or len(buffer):
                self._arm(now)
            if run:
                if counting:  # self._allow(run), its common case inline
                    left = self._left - len(run)  # type: ignore[operator]
                    if left > 0:
                        self._left = left
                    else:
                        run = self._allow(run)
                self._pipe_bytes += len(run[0][0]) if len(run) == 1 else _run_size(run)
                if buffer.overflows != self._overflows_seen:
                    self._overflowed()
                outbox.extend(run)
                if not self._draining:
                    if self._pump():
                        await self._drain()
                elif len(outbox) >= _OUTBOX_HIGH:
                    # A drain runs elsewhere (timer, sink reconnect): stop reading
                    # until it is done, so the backlog stays in the source's socket.
                    await self._drained.wait()
            if self._pipe_bytes and self._pipe_bytes + buffer.held_bytes >= limit_bytes:
                await self._make_room()

    async def _make_room(self) -> None:
        """Read the source no more until the sink took enough for what is held to fit.

        Only a pipe (outbox, batch) that holds something is waited for: the sink
        empties it. A full reorder buffer skips a gap instead (see the module doc).
        """
        self.source_pauses += 1
        buffer = self.buffer
        while self._pipe_bytes and self._pipe_bytes + buffer.held_bytes >= self.limit_bytes:
            self._room.clear()
            await self._room.wait()

    def _malformed(self, reason: str, frame: bytes) -> None:
        """A source frame with no usable id: say so, one line per reason every _LOG_EVERY s."""
        held = self._gate.allow(reason)
        if held is not None:
            log.warning("dropped %d source frame(s): %s (latest: %r)", held + 1, reason, frame[:80])

    def _overflowed(self) -> None:
        """The reorder buffer was full and skipped a gap: say so, at most every _LOG_EVERY s."""
        buffer = self.buffer
        self._overflows_seen = buffer.overflows
        if self._gate.allow(OVERFLOW) is None:
            return
        log.warning(
            "reorder buffer full (buffer_limit %d messages, buffer_limit_bytes %d): its oldest"
            " gap skipped, %d time(s) so far, %d id(s) skipped in all; next id %d",
            buffer.limit,
            self.limit_bytes,
            buffer.overflows,
            buffer.skipped,
            buffer.next_id,
        )

    def _allow(self, run: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        """The part of ``run`` the count lets through; what is past it is never sent."""
        left = self._left
        assert left is not None
        if len(run) > left:
            self.past_count += len(run) - left
            run = run[:left]
        self._left = left - len(run)
        return run

    def _pump(self) -> bool:
        """Move the outbox to the sink's writer; True if its socket backed up (drain it)."""
        writer = self._writer
        if writer is None or not writer.open:
            return False  # the sink loop pumps again once it reconnects
        outbox = self._outbox
        add = writer.add
        popleft = outbox.popleft
        while outbox:
            if add(*popleft()) and writer.backed_up:
                return True
        return False

    async def _drain(self) -> None:
        """Wait for the sink's socket to take what we wrote, pumping, until the outbox is empty."""
        self._draining = True
        self._drained.clear()
        try:
            while (writer := self._writer) is not None:
                writer.write()
                try:
                    await writer.connection.drain()
                except (ConnectionClosed, ConnectionError):
                    return  # the sink loop reconnects and pumps the rest
                if not self._pump():
                    return
        finally:
            self._draining = False
            self._drained.set()

    def _written(self, frames: int, size: int, end: int) -> None:
        """The writer put ``frames`` (``size`` bytes) on the sink's socket at clock ``end``."""
        self._pipe_bytes -= size
        self._room.set()
        self.sent += frames
        self.last_send = end
        if self.count is not None and self.sent >= self.count:
            self._done.set()

    # -- gap and settle timer

    def _arm(self, now: int) -> None:
        """Keep one timer at the buffer's deadline."""
        deadline = self.buffer.deadline
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            # uvloop's clock ticks in milliseconds: a millisecond late, never early.
            delay = (deadline - now) / 1e9 + 0.001
            self._timer = asyncio.get_running_loop().call_later(max(delay, 0), self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = _clock()
        run = self.buffer.expire(now)
        self._arm(now)
        if run:
            if self._left is not None:
                run = self._allow(run)
            self._pipe_bytes += _run_size(run)
            self._outbox.extend(run)
            if not self._draining and self._pump():
                asyncio.get_running_loop().create_task(self._drain())

    # -- figures

    def stats(self) -> dict[str, Any]:
        buffer = self.buffer
        first, last = self.first_receipt, self.last_send
        run_s = (last - first) / 1e9 if first is not None and last is not None else 0.0
        stats: dict[str, Any] = {
            "source": "connected" if self._source is not None else "disconnected",
            "sink": "connected" if self._sink is not None else "disconnected",
            "source_connects": self.source_connects,
            "sink_connects": self.sink_connects,
            "received": self.received,
            "sent": self.sent,
            "buffered": len(buffer),
            "outbox": len(self._outbox),
            "held_bytes": buffer.held_bytes + self._pipe_bytes,
            "buffer_limit_bytes": self.limit_bytes,
            "source_pauses": self.source_pauses,
            "first_id": buffer.start,
            "first_id_learned": buffer.learned,
            "next_id": buffer.next_id,
            "skipped": buffer.skipped,
            "skips": buffer.skips,
            "skips_full": buffer.overflows,
            "dropped": {**self.dropped, OUTLIER: buffer.outliers},
            "sink_drops": self.sink_drops,
            "sink_unconfirmed": self.sink_unconfirmed,
            "hold": self.holds.summary_us(),
            "run_s": round(run_s, 6),
            "sent_per_s": round(self.sent / run_s) if run_s > 0 else None,
        }
        if self.count is not None:
            stats["past_count"] = self.past_count
        stats["problems"] = self.problems()
        return stats

    def problems(self) -> list[str]:
        """What went wrong so far, in words, for status and the one-shot report."""
        buffer = self.buffer
        problems = []
        if buffer.skipped:
            problems.append(f"{buffer.skipped} ids skipped")
        if buffer.overflows:
            problems.append(
                f"the reorder buffer was full {buffer.overflows} time(s) (buffer_limit"
                f" {buffer.limit} messages, buffer_limit_bytes {self.limit_bytes}) and skipped"
                " its oldest gap"
            )
        if buffer.below_start and buffer.learned:
            problems.append(
                f"{buffer.below_start} id(s) below the first id {buffer.start} arrived after it"
                f" was learned from the ids seen within settle_ms {self.settle_ms}, and were"
                f" dropped, the lowest {buffer.lowest_below_start}: set the first id"
                f" (--first-id {buffer.lowest_below_start}) or a longer settle_ms"
            )
        if self.sink_drops:
            problems.append(
                f"the sink connection dropped {self.sink_drops} time(s): of the {self.sent}"
                f" messages sent, {self.sink_unconfirmed} were never acknowledged by the"
                f" sink's TCP (lost, or received just before it died), at least"
                f" {self.sent - self.sink_unconfirmed} reached its host"
            )
        return problems
