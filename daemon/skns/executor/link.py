"""The router's side of a shard connection: unacked chunks, resend on reconnect, acks.

The router connects to each shard's unix socket and keeps trying while it is
down. Every chunk (one IPC frame of events) stays in ``unacked`` until the
shard acks a seq at or past its last event; on reconnect all of them are sent
again, in order, and the shard drops the seqs it already holds. The first thing
a shard sends on a new connection is the highest seq it holds, which acks at
once what it had already journaled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from .. import jsonexact
from ..errors import ProtocolError
from . import ipc

log = logging.getLogger("skns.executor.router")

RECONNECT_DELAY = 0.05
RECONNECT_DELAY_MAX = 1.0


class Chunk:
    """Events sent to a shard in one IPC frame, kept until the shard acks them."""

    __slots__ = ("answers", "count", "data", "high")

    def __init__(self, high: int, data: bytes, count: int, answers: list[list[Any]]) -> None:
        self.high = high
        self.data = data
        self.count = count
        self.answers = answers  # [[the router's Answer, events of it in this chunk], ...]


class ShardLink(asyncio.Protocol):
    """The router's connection to one shard, re-established whenever it drops."""

    def __init__(
        self,
        index: int,
        path: str,
        on_acked: Callable[[Chunk], None],
        on_held: Callable[[int], None],
        on_link: Callable[[], None] = lambda: None,
    ) -> None:
        self.index = index
        self.path = path
        self._on_acked = on_acked
        self._on_held = on_held  # the shard holds every seq up to this one
        self._on_link = on_link  # connected or lost
        self.unacked: deque[Chunk] = deque()
        self.backlog = 0  # events sent or waiting to be sent, not acked
        self._outbox: list[list[Any]] = []
        self._outbox_answers: list[list[Any]] = []
        self._transport: asyncio.Transport | None = None
        self._decoder = ipc.FrameDecoder()
        self._lost = asyncio.Event()
        self._closing = False
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def add(self, wire: list[Any], answer: object) -> None:
        """Queue an event for the next flush; ``answer`` is what its client frame is owed."""
        self._outbox.append(wire)
        answers = self._outbox_answers
        if answers and answers[-1][0] is answer:
            answers[-1][1] += 1
        else:
            answers.append([answer, 1])

    def flush(self) -> None:
        outbox = self._outbox
        if not outbox:
            return
        chunk = Chunk(
            outbox[-1][0], ipc.frame(jsonexact.dumps(outbox)), len(outbox), self._outbox_answers
        )
        self._outbox = []
        self._outbox_answers = []
        self.unacked.append(chunk)
        self.backlog += chunk.count
        if self._transport is not None:
            self._transport.write(chunk.data)

    # -- connection ---------------------------------------------------------------------

    async def keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RECONNECT_DELAY
        while True:
            try:
                await loop.create_unix_connection(lambda: self, self.path)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_MAX)
                continue
            delay = RECONNECT_DELAY
            await self._lost.wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        self._decoder = ipc.FrameDecoder()
        self._lost.clear()
        self.connects += 1
        if self.unacked:
            log.info("shard %d: resending %d unacked events", self.index, self.backlog)
            transport.writelines([chunk.data for chunk in self.unacked])
        self._on_link()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None and not self._closing:
            # A stopping or crashed shard; the supervisor reports which. Its events wait here.
            log.info("shard %d disconnected (%s); reconnecting", self.index, exc or "closed")
        self._transport = None
        self._lost.set()
        self._on_link()

    def data_received(self, data: bytes) -> None:
        try:
            acks = [ipc.parse_ack(body) for body in self._decoder.feed(data)]
        except ProtocolError as exc:
            log.error("shard %d: %s; reconnecting", self.index, exc)
            if self._transport is not None:
                self._transport.close()
            return
        for seq in acks:
            self._on_held(seq)
            unacked = self.unacked
            while unacked and unacked[0].high <= seq:
                chunk = unacked.popleft()
                self.backlog -= chunk.count
                self._on_acked(chunk)

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()
