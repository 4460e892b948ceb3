"""A shard child: journal, per-account FIFOs, and the handler runs.

The shard listens on a unix socket for the router. Each IPC frame (events in
increasing seq order) is journaled as it came, queued per account and, since
the handler's effects are at-least-once anyway, started at once without
waiting for the fsync; the ack to the router waits for it. Seqs at or below
the highest one held are dropped: they are the router resending what it sent
before this shard restarted.

An account with queued events has one runner task going through its queue,
so accounts run concurrently and each account one event at a time, in seq
order. On start the journal's unfinished events are queued first, in seq order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from .. import jsonexact
from ..child import ChildContext
from ..config import Settings
from ..errors import ProtocolError
from . import ipc
from .events import Event
from .handlers import HandlerEnv
from .journal import Journal
from .records import Wire
from .runner import Handler, Runner
from .tuning import tune_gc

log = logging.getLogger("skns.executor.shard")

RESUME_FRACTION = 0.9  # a paused shard reads again below this fraction of max_backlog


class RouterLink(asyncio.Protocol):
    """The shard's end of the router connection."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.transport: asyncio.Transport | None = None
        self._decoder = ipc.FrameDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.shard.attach(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.shard.detach(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            for body in self._decoder.feed(data):
                self.shard.receive(body)
        except (ProtocolError, jsonexact.JSONDecodeError, IndexError, TypeError, ValueError) as exc:
            log.error("bad frame from the router (%s); dropping the connection", exc)
            if self.transport is not None:
                self.transport.close()

    def set_reading(self, reading: bool) -> None:
        """Back-pressure: stop (or go on) taking events from the router."""
        if self.transport is not None and not self.transport.is_closing():
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def send_ack(self, seq: int) -> None:
        if self.transport is not None:
            self.transport.write(ipc.ack_frame(seq))


class Shard:
    def __init__(
        self, settings: Settings, index: int, ready: Callable[[], None] = lambda: None
    ) -> None:
        self.ready = ready  # called once the journal is replayed and the socket listens
        config = settings.executor
        self.config = config
        self.index = index
        self.directory = settings.service.state_dir / "executor" / f"shard-{index}"
        self.socket_path = ipc.socket_path(settings.service.runtime_dir, index)
        self.handler = Handler(config)
        self.runner = Runner(config, self.handler, self._finished)
        self.env = HandlerEnv(index, config.duration, self.directory)
        self.pending: dict[int, Event] = {}  # accepted, not finished
        self.high = 0  # highest seq accepted
        self.links: set[RouterLink] = set()
        self.paused = False
        self.finishing = False  # stopping: taking the router's last events whatever the backlog
        self.journal: Journal | None = None
        if config.journal:
            self.journal = Journal(
                self.directory,
                fsync=config.fsync,
                interval=config.fsync_interval,
                compact_bytes=config.compact_bytes,
                on_durable=self._ack,
                snapshot=self._snapshot,
                pending_count=lambda: len(self.pending),
            )
        self.accepted = 0
        self.duplicates = 0
        self.replayed = 0

    # -- the router ---------------------------------------------------------------------

    def attach(self, link: RouterLink) -> None:
        self.links.add(link)
        if self.paused:
            link.set_reading(False)
        # Tell the router what this shard holds: it drops acked chunks it resends.
        link.send_ack(self.journal.durable if self.journal is not None else self.high)

    def detach(self, link: RouterLink) -> None:
        self.links.discard(link)

    def _ack(self, seq: int) -> None:
        """Everything up to ``seq`` is accepted (journaled, when the journal is on)."""
        for link in self.links:
            link.send_ack(seq)

    def _snapshot(self) -> tuple[list[Wire], int]:
        return [event.wire() for event in self.pending.values()], self.high

    def receive(self, body: bytes) -> None:
        """One IPC frame from the router."""
        wires = jsonexact.loads(body)
        if not wires:
            return
        high = self.high
        if wires[0][0] <= high:
            fresh = [wire for wire in wires if wire[0] > high]
            self.duplicates += len(wires) - len(fresh)
            if not fresh:
                durable = self.journal.durable if self.journal is not None else high
                if durable >= wires[-1][0]:
                    self._ack(durable)
                return  # otherwise the fsync under way acks them
            wires = fresh
            body = jsonexact.dumps(wires)
        env = self.env
        pending = self.pending
        for seq, account, event_id, payload in wires:
            event = Event(seq, account, event_id, payload, env)
            pending[seq] = event
            self._admit(event)
        self.high = wires[-1][0]
        self.accepted += len(wires)
        if self.journal is not None:
            self.journal.accept(body, self.high)
        else:
            self._ack(self.high)
        if (
            not self.paused
            and not self.finishing
            and self.runner.scheduler.queued >= self.config.max_backlog
        ):
            self.paused = True
            for link in self.links:
                link.set_reading(False)

    # -- running ------------------------------------------------------------------------------

    def _admit(self, event: Event) -> None:
        self.runner.admit(event)

    def _finished(self, event: Event, ok: bool) -> None:
        if self.journal is not None:
            if ok:
                self.journal.done(event.seq)
            else:
                self.journal.failed(event.seq)
        del self.pending[event.seq]
        if self.paused and self.runner.scheduler.queued < self.config.max_backlog * RESUME_FRACTION:
            self.paused = False
            for link in self.links:
                link.set_reading(True)

    # -- the child ------------------------------------------------------------------------------

    async def main(self, stop: asyncio.Event) -> None:
        if self.journal is not None:
            replay = await self.journal.open()
            self.high = replay.high
            for seq, account, event_id, payload in replay.unfinished():
                event = Event(seq, account, event_id, payload, self.env)
                self.pending[seq] = event
                self._admit(event)
                self.replayed += 1
            if self.replayed:
                log.info("replaying %d unfinished events", self.replayed)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(lambda: RouterLink(self), str(self.socket_path))
        self.ready()
        try:
            await self._until_stopped(stop)
        finally:
            server.close()
            await self._let_router_finish()
            for link in self.links:
                link.set_reading(False)
            if self.journal is not None:
                await self.journal.sync()  # acks what was taken, before hanging up
            for link in list(self.links):
                if link.transport is not None:
                    link.transport.close()
            # Running handlers may finish for a while; the others run again on start.
            await self.runner.drain(self.config.drain_timeout)
            if self.journal is not None:
                await self.journal.close()
            self.socket_path.unlink(missing_ok=True)
            self.handler.shutdown()

    async def _until_stopped(self, stop: asyncio.Event) -> None:
        """Until asked to stop; raises if the journal cannot be written any more."""
        if self.journal is None:
            await stop.wait()
            return
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self.journal.failure())
        done, _ = await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
        if failed in done:
            raise failed.result()

    async def _let_router_finish(self) -> None:
        """Take and ack events until the router hangs up, for up to ``drain_timeout``.

        A stopping router sends its clients the acks that are due before it
        closes, and a client resends a frame it saw no ack for. A frame's events
        may be spread over several shards, and acks go out in frame order: if
        this shard stopped taking events first, events other shards had
        journaled would wait behind an ack that never comes, and run twice. So
        the shard reads on (past ``max_backlog`` too: the router holds at most
        ``max_unacked`` events) until the router, done with its clients, hangs
        up; a router that is not stopping gets ``drain_timeout``.
        """
        self.finishing = True
        if self.paused:
            self.paused = False
            for link in self.links:
                link.set_reading(True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        while self.links and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def stats(self) -> dict[str, Any]:
        return {
            "shard": self.index,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "replayed": self.replayed,
            **self.runner.stats(),
            "paused": self.paused,
            "journal_bytes": self.journal.size if self.journal is not None else 0,
            "journal_writes": self.journal.writes if self.journal is not None else 0,
            "compactions": self.journal.compactions if self.journal is not None else 0,
            "journal_damaged": self.journal.damaged if self.journal is not None else 0,
            "journal_quarantined": self.journal.quarantined if self.journal is not None else 0,
            "journal_error": self.journal.error if self.journal is not None else None,
            "journal_write_errors": self.journal.write_errors if self.journal is not None else 0,
        }


def run(ctx: ChildContext) -> None:
    """ChildSpec target of shard ``ctx.spec.index`` (role ``executor-shard``)."""
    shard = Shard(ctx.settings, ctx.spec.index, ready=ctx.ready)
    tune_gc()
    ctx.serve(shard.main, shard.stats)
