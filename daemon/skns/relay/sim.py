"""A simulator of both ends of the relay: a shuffling, delaying source and a checking sink.

One WebSocket server answers both paths, as the original servers do:

- ``/raw-messages`` (the source) sends ``{"id": int, "text": int}`` frames in
  the order and at the times of a :class:`SourcePlan`: ids shuffled within a
  window, some held back by a random delay, some sent twice, some never. A
  reconnecting client picks up where the last connection stopped (less
  ``replay`` frames sent again); ``drop_after`` makes the source cut each
  connection after that many frames, to exercise reconnects.
- ``/ordered-messages/{name}`` (the sink) checks that ids arrive strictly
  increasing across all of a name's connections, counts gaps, duplicates and
  regressions, and measures the end-to-end time of the stream (first frame the
  source sent to last frame the sink got) and each message's end-to-end delay.

The source writes pre-framed bytes straight to the connection's transport, a
batch per write: a load generator must cost far less than what it measures.
The frames are ordinary unmasked server text frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ..wshttp import RefusingServerConnection
from .holdtime import HoldTimes

log = logging.getLogger("skns.relay.sim")

SOURCE_PATH = "/raw-messages"
SINK_PREFIX = "/ordered-messages/"
DELAYS = ("none", "uniform", "exp")

_clock = time.perf_counter_ns
_BATCH = 256  # frames per transport write when they are due together


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What the source sends, and when."""

    count: int = 10_000  # distinct ids: start .. start + count - 1
    start: int = 0
    window: int = 10  # each id lands up to this many places from its sorted position
    delay: str = "exp"  # distribution of the extra delay of late messages: none, uniform, exp
    delay_ms: float = 1.0  # its mean (exp) or its maximum (uniform)
    late: float = 0.01  # fraction of messages held back by that delay
    duplicates: float = 0.0  # fraction sent a second time, a little later
    drops: float = 0.0  # fraction never sent
    rate: float = 0.0  # messages per second; 0: as fast as the connection takes them
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be >= 1")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.delay not in DELAYS:
            raise ValueError(f"delay must be one of {DELAYS}")
        for key in ("late", "duplicates", "drops"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{key} must be within 0..1")
        if self.delay_ms < 0 or self.rate < 0:
            raise ValueError("delay_ms and rate must be >= 0")

    def schedule(self) -> list[tuple[float, float, int]]:
        """(seconds after the start, extra delay in seconds, id) per frame, in sending order.

        A frame is due at its time; one with a delay is sent that long after it
        was due, while the frames after it go on: a late message, not a pause.
        """
        rng = random.Random(self.seed)
        ids = range(self.start, self.start + self.count)
        # Shuffle within the window: sort by position plus a random displacement.
        order = sorted(ids, key=lambda i: i + rng.random() * self.window)
        spacing = 1 / self.rate if self.rate else 0.0
        frames: list[tuple[float, float, int]] = []
        for position, id_ in enumerate(order):
            if self.drops and rng.random() < self.drops:
                continue
            at = position * spacing
            late = self.late and rng.random() < self.late
            frames.append((at, self._delay(rng) if late else 0.0, id_))
            if self.duplicates and rng.random() < self.duplicates:
                frames.append((at, self._delay(rng) + spacing, id_))
        return frames

    def _delay(self, rng: random.Random) -> float:
        if self.delay == "uniform":
            return rng.random() * self.delay_ms / 1000
        if self.delay == "exp":
            return rng.expovariate(1000 / self.delay_ms) if self.delay_ms else 0.0
        return 0.0

    def frames(self) -> list[tuple[float, float, int | None, bytes]]:
        """The schedule with each message encoded: (seconds, delay, id, JSON bytes)."""
        rng = random.Random(self.seed + 1)
        return [
            (at, delay, id_, orjson.dumps({"id": id_, "text": rng.randrange(1 << 31)}))
            for at, delay, id_ in self.schedule()
        ]


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (what a server sends)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class Source:
    """The ``/raw-messages`` side: a fixed script of frames shared by all connections."""

    def __init__(
        self,
        script: Sequence[tuple[float, float, int | None, bytes]],
        *,
        drop_after: int = 0,
        replay: int = 0,
    ) -> None:
        # (ns after start, delay ns, id or None for a frame with no usable id, wire bytes)
        self.script = [
            (round(at * 1e9), round(delay * 1e9), id_, text_frame(payload))
            for at, delay, id_, payload in script
        ]
        self.drop_after = drop_after  # cut each connection after this many frames (0: never)
        self.replay = replay  # frames of the script a new connection sends again
        self.cursor = 0  # frames of the script taken so far
        # Late frames waiting for their time: (due clock, script position, id, wire).
        self.pending: list[tuple[int, int, int | None, bytes]] = []
        self.connections = 0
        self.started: int | None = None  # clock at the first frame
        self.started_cpu = 0.0  # process CPU time then
        self.first_sent: dict[int, int] = {}  # id -> clock when first written
        self.done = asyncio.Event()  # every frame of the script written

    @property
    def expected(self) -> list[int]:
        """The distinct ids in the script, sorted: what a perfect sink receives."""
        return sorted({id_ for _, _, id_, _ in self.script if id_ is not None})

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        position = max(0, self.cursor - self.replay)
        if self.started is None:
            self.started = _clock()
            self.started_cpu = time.process_time()
        started = self.started
        script = self.script
        pending = self.pending
        first_sent = self.first_sent
        transport = ws.transport
        batch: list[bytes] = []
        written = 0  # on this connection

        async def write() -> None:
            transport.write(b"".join(batch))
            batch.clear()
            await ws.drain()

        try:
            while position < len(script) or pending:
                now = _clock()
                due = started + script[position][0] if position < len(script) else None
                if pending and pending[0][0] <= now:
                    _, _, id_, wire = heapq.heappop(pending)
                elif due is not None and due <= now:
                    _, delay, id_, wire = script[position]
                    position += 1
                    self.cursor = max(self.cursor, position)
                    if delay:
                        heapq.heappush(pending, (now + delay, position, id_, wire))
                        continue
                else:  # nothing due yet: send what we have, sleep until something is
                    if batch:
                        await write()
                    wake = min(
                        t for t in (due, pending[0][0] if pending else None) if t is not None
                    )
                    await asyncio.sleep(max(wake - _clock(), 0) / 1e9)
                    if ws.state is not State.OPEN:
                        return
                    continue
                batch.append(wire)
                if id_ is not None and id_ not in first_sent:
                    first_sent[id_] = now
                written += 1
                if self.drop_after and written >= self.drop_after:
                    transport.write(b"".join(batch))
                    # An abrupt end, as a crashing server would leave it: no close frame.
                    transport.abort()
                    return
                if len(batch) >= _BATCH:
                    await write()
            if batch:
                await write()
            self.done.set()
            await ws.wait_closed()  # stay open, idle, until the client leaves
        except (ConnectionClosed, ConnectionError):
            return


class SinkStream:
    """What ``/ordered-messages/{name}`` received over all its connections."""

    def __init__(
        self, name: str, source: Source, *, drop_after: int = 0, record: bool = False
    ) -> None:
        self.name = name
        self.source = source
        self.drop_after = drop_after  # cut each connection after this many frames (0: never)
        self.frames: list[bytes] | None = [] if record else None  # every frame, as received
        self.received = 0
        self.last_id: int | None = None
        self.out_of_order = 0  # an id not above the one before it (includes duplicates)
        self.duplicates = 0
        self.gaps = 0  # jumps over at least one id
        self.missing = 0  # ids jumped over
        self.not_messages = 0  # frames without a usable id
        self.connections = 0
        self.open_connections = 0
        self.last_received: int | None = None
        self.delays = HoldTimes()  # end to end: source write to sink receipt
        self.seen: set[int] = set()
        self.complete = asyncio.Event()  # every expected id received

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            await self._receive(ws)
        finally:
            self.open_connections -= 1

    async def _receive(self, ws: ServerConnection) -> None:
        expected = len(self.source.expected)
        first_sent = self.source.first_sent
        seen = self.seen
        add = self.delays.add
        loads = orjson.loads
        frames = self.frames
        on_this_connection = 0
        try:
            while True:
                frame = await ws.recv(False)
                now = _clock()
                self.received += 1
                self.last_received = now
                if frames is not None:
                    frames.append(frame)
                on_this_connection += 1
                if on_this_connection == self.drop_after:
                    ws.transport.abort()  # what the relay wrote after this frame is lost
                try:
                    id_ = loads(frame)["id"]
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    self.not_messages += 1
                    continue
                if type(id_) is not int:
                    self.not_messages += 1
                    continue
                last = self.last_id
                if last is not None and id_ <= last:
                    self.out_of_order += 1
                    if id_ in seen:
                        self.duplicates += 1
                    continue
                if last is not None and id_ > last + 1:
                    self.gaps += 1
                    self.missing += id_ - last - 1
                self.last_id = id_
                seen.add(id_)
                sent = first_sent.get(id_)
                if sent is not None:
                    add(now - sent)
                if len(seen) >= expected:
                    self.complete.set()
        except ConnectionClosed:
            return

    @property
    def in_order(self) -> bool:
        return self.out_of_order == 0

    def report(self) -> dict[str, Any]:
        expected = self.source.expected
        started, last = self.source.started, self.last_received
        total = (last - started) / 1e9 if started is not None and last is not None else None
        got = len(self.seen)
        return {
            "name": self.name,
            "expected": len(expected),
            "received": self.received,
            "distinct": got,
            "in_order": self.in_order,
            "complete": got == len(expected) and self.in_order,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "missing": len(expected) - got,
            "not_messages": self.not_messages,
            "connections": self.connections,
            "total_s": None if total is None else round(total, 6),
            "per_s": round(got / total) if total else None,
            "end_to_end": self.delays.summary_us(),
            # The simulator's CPU time since the stream started: near total_s, it was the limit.
            "cpu_s": round(time.process_time() - self.source.started_cpu, 3),
        }


class Simulator:
    """The server holding one :class:`Source` and a :class:`SinkStream` per name.

    ``async with Simulator(source) as sim:`` listens on ``host:port`` (0: any
    free port, see :attr:`port`) until the block ends.
    """

    def __init__(
        self,
        source: Source,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sink_drop_after: int = 0,
        record: bool = False,
    ) -> None:
        self.source = source
        self.host = host
        self.requested_port = port
        self.sink_drop_after = sink_drop_after  # sinks cut each connection after this many
        self.record = record  # sinks keep every frame they receive
        self.sinks: dict[str, SinkStream] = {}
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def source_url(self) -> str:
        return f"ws://{self.host}:{self.port}{SOURCE_PATH}"

    def sink_url(self, name: str) -> str:
        return f"ws://{self.host}:{self.port}{SINK_PREFIX}{name}"

    def sink(self, name: str) -> SinkStream:
        """The stream of ``name``, created on first use (by a test or a connection)."""
        stream = self.sinks.get(name)
        if stream is None:
            stream = self.sinks[name] = SinkStream(
                name, self.source, drop_after=self.sink_drop_after, record=self.record
            )
        return stream

    async def __aenter__(self) -> Simulator:
        self._server = await serve(
            self._handle,
            self.host,
            self.requested_port,
            compression=None,
            max_queue=1024,
            create_connection=RefusingServerConnection,  # plain HTTP gets a clear refusal
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path
        if path == SOURCE_PATH:
            await self.source.handle(ws)
        elif path.startswith(SINK_PREFIX) and len(path) > len(SINK_PREFIX):
            await self.sink(path[len(SINK_PREFIX) :]).handle(ws)
        else:
            await ws.close(1008, f"unknown path {path}")
