"""The router child: WebSocket ingest, arrival seqs, routing to shards, acks.

Each client frame gets exactly one answer, in the order the frames came on
that connection: ``{"ack": seq}`` for a single event, ``{"ack": [seq, ...]}``
for a batch (once every event of it is accepted), or ``{"error": reason}``
(``"index"`` added for a bad event inside a batch) for a frame that is refused
whole. A refused frame changes nothing else; the connection stays open.

Events are stamped with the next arrival seq, routed by the ring, and coalesced
per shard into one IPC frame per loop iteration. The router keeps every chunk
until its shard acks it (the shard acks after its journal fsync), so when a
shard restarts the router reconnects and sends the unacked chunks again; the
shard drops the seqs it already holds.

Back-pressure: while ``max_unacked`` events wait for shard acks the router stops
reading client frames (TCP then pushes back on clients); a shard past
``max_backlog`` stops reading the router, so its acks, and ours, slow down.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import socket
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..child import ChildContext
from ..config import Settings
from ..listeners import serve_args
from ..wsflow import PacedServerConnection
from ..wslimit import ConnectionLimit, json_response
from . import ipc, records
from .events import BadEvent, Incoming, parse_frame
from .link import Chunk, ShardLink
from .ring import Ring
from .sequence import Sequence
from .tuning import tune_gc

log = logging.getLogger("skns.executor.router")

# A client frame larger than this many times max_frame_bytes is refused by the
# WebSocket layer itself (close 1009) so that it is never buffered whole.
HARD_FRAME_FACTOR = 16
# Answers a connection may owe before the router stops reading from it.
MAX_ANSWERS = 10_000
# A compacted journal with nothing unfinished holds just its high-water record.
EMPTY_JOURNAL = len(records.high_record(0))


class Answer:
    """What one client frame is owed: sent when ``remaining`` reaches 0."""

    __slots__ = ("body", "client", "remaining")

    def __init__(self, client: Client, remaining: int, body: bytes = b"") -> None:
        self.client = client
        self.remaining = remaining
        self.body = body


class Client:
    """One ingest connection: its answers, sent in frame order by a writer task."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.answers: deque[Answer] = deque()
        self.ready = asyncio.Event()  # an answer may be sendable
        self.drained = asyncio.Event()  # fewer than MAX_ANSWERS are owed
        self.drained.set()
        self.closing = False  # the router stops: send what is due, then end
        self.writer = asyncio.create_task(self.write_answers())

    def owe(self, answer: Answer) -> None:
        self.answers.append(answer)
        if answer.remaining == 0:
            self.ready.set()
        if len(self.answers) >= MAX_ANSWERS:
            self.drained.clear()

    async def write_answers(self) -> None:
        answers = self.answers
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                while answers and answers[0].remaining == 0:
                    await self.ws.send(answers.popleft().body, text=True)
                if len(answers) < MAX_ANSWERS:
                    self.drained.set()
                if self.closing:
                    return
        except ConnectionClosed:
            pass  # the client left: what it is still owed goes nowhere

    def release(self) -> None:
        """Stop holding the reader back (the router is stopping)."""
        self.drained.set()

    def finish(self) -> None:
        """Send the answers that are due now, then end the writer."""
        self.closing = True
        self.ready.set()


class Ingest:
    """The WebSocket ingest of a router, whatever carries the events on."""

    def __init__(
        self,
        settings: Settings,
        shards: int,
        ready: Callable[[], None] = lambda: None,
        listener: socket.socket | None = None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.shards = shards  # shard processes of this host
        self.ready = ready  # called once the ingest listens
        # Called when a shard link comes or goes: the stats go out at once (a waiter for
        # "every shard connected", as the local executor's wait_ready, need not wait 0.5 s).
        self.changed = changed
        self.listener = listener  # the supervisor's socket on config.listen; None: bind it
        self.config = settings.executor
        self.unacked = 0
        # The router stops reading clients while this many events wait for their acks.
        self.max_unacked = self.config.max_unacked
        self.room = asyncio.Event()  # fewer than max_unacked events wait for their acks
        self.room.set()
        self.clients: set[Client] = set()
        self.stopping = False
        self.frames = 0
        self.received = 0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        # max_connections: a client that opens many connections cannot take the descriptors.
        self.limit = ConnectionLimit(self.config.max_connections, self._health)
        self.port = 0

    # -- clients ----------------------------------------------------------------------------

    def _refuse(self, client: Client, error: BadEvent) -> None:
        self.rejected[error.reason if error.index is None else "bad event in batch"] += 1
        client.owe(Answer(client, 0, orjson.dumps(error.answer())))

    def _take(self, client: Client, message: bytes) -> None:
        self.frames += 1
        if len(message) > self.config.max_frame_bytes:
            self._refuse(client, BadEvent(f"frame exceeds {self.config.max_frame_bytes} bytes"))
            return
        try:
            events, batch = parse_frame(message, self.config.max_batch)
        except BadEvent as error:
            self._refuse(client, error)
            return
        self._dispatch(client, events, batch)
        self.received += len(events)
        self.unacked += len(events)

    async def _serve_client(self, ws: ServerConnection) -> None:
        client = Client(ws)
        self.clients.add(client)
        room = self.room
        max_unacked = self.max_unacked
        try:
            while True:
                # Text frames too as bytes: no UTF-8 decoding into str (orjson checks
                # the encoding as it parses) and the size limit counts bytes.
                message = await ws.recv(decode=False)
                if self.stopping:
                    # Not taken, not answered: the client sends it again. Reading on (until
                    # the close) lets the client's close frame through the flow control.
                    continue
                self._take(client, message)
                # Back-pressure: not reading leaves the frames in the client's TCP stream.
                if self.unacked >= max_unacked and not self.stopping:
                    room.clear()
                    await room.wait()
                if not client.drained.is_set() and not self.stopping:
                    await client.drained.wait()
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            client.writer.cancel()

    def _health(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/health":
            return None
        ok, doc = self._health_doc()
        body = orjson.dumps(
            {"status": "ok" if ok else "degraded", **doc, "in_flight": self.unacked}
        )
        return json_response(
            http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE, body
        )

    # -- the child ----------------------------------------------------------------------------

    async def main(self, stop: asyncio.Event) -> None:
        keepers = await self._start(stop)
        if keepers is None:
            return
        listen = self.config.listen
        try:
            async with serve(
                self._serve_client,
                **serve_args(listen, self.listener),
                process_request=self.limit.process_request,
                create_connection=PacedServerConnection,  # a ping flood cannot grow the buffer
                max_size=self.config.max_frame_bytes * HARD_FRAME_FACTOR,
                compression=None,
                # A client that does not read its answers cannot hold a stop for long.
                close_timeout=self.config.drain_timeout,
            ) as server:
                self.port = server.sockets[0].getsockname()[1]
                log.info("executor ingest on %s:%d, %s", listen.host, self.port, self._describe())
                self.ready()
                await stop.wait()
                await self._stop_clients()
                server.close()
                await server.wait_closed()
        finally:
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._finish()

    async def _stop_clients(self) -> None:
        """Take no more frames, then send every ack that falls due before closing.

        A client resends a frame it saw no ack for, so an ack withheld for an
        event a shard has journaled makes that event run twice. Stopping shards
        go on journaling and acking what the router sent until it hangs up; the
        router waits up to ``drain_timeout`` for those acks (or for the shard to
        go), then lets each connection's writer send what is due.
        """
        self.stopping = True
        # Wake readers held back by back-pressure: from now on they read and drop frames.
        self.room.set()
        for client in self.clients:
            client.release()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        while loop.time() < deadline and self._in_transit():
            await asyncio.sleep(0.01)
        for client in self.clients:
            client.finish()
        writers = [client.writer for client in self.clients]
        if writers:
            await asyncio.wait(writers, timeout=self.config.drain_timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "listen": f"{self.config.listen.host}:{self.port}",
            "connections": len(self.clients),
            "frames": self.frames,
            "received": self.received,
            "accepted": self.accepted,
            "in_flight": self.unacked,
            "rejected": dict(self.rejected),
            **self.limit.stats(),
        }

    # -- what a mode provides ------------------------------------------------------------

    def _dispatch(self, client: Client, events: list[Incoming], batch: bool) -> None:
        """Send a frame's events on and owe the client its answer."""
        raise NotImplementedError

    def _health_doc(self) -> tuple[bool, dict[str, Any]]:
        """Whether this router can take events now, and the details."""
        raise NotImplementedError

    async def _start(self, stop: asyncio.Event) -> list[asyncio.Task[None]] | None:
        """Get ready to take events; the tasks that run beside the ingest. None: stopped
        before it was ready."""
        raise NotImplementedError

    async def _finish(self) -> None:
        raise NotImplementedError

    def _in_transit(self) -> bool:
        """Events sent on that may still be acked."""
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError


class Router(Ingest):
    """The single-host router: arrival seqs, and events carried to the shards over IPC."""

    def __init__(self, settings: Settings, shards: int, **kwargs: Any) -> None:
        super().__init__(settings, shards, **kwargs)
        self.ring = Ring(shards)
        self.state = settings.service.state_dir / "executor"
        self.sequence = Sequence(self.state / "router.seq")
        runtime = settings.service.runtime_dir
        self.links = [
            ShardLink(
                i,
                str(ipc.socket_path(runtime, i)),
                self._acked,
                self.sequence.skip_past,
                self.changed,
            )
            for i in range(shards)
        ]
        self._flush_pending = False

    # -- shard acks ---------------------------------------------------------------------

    def _acked(self, chunk: Chunk) -> None:
        self.unacked -= chunk.count
        self.accepted += chunk.count
        for answer, count in chunk.answers:
            answer.remaining -= count
            if answer.remaining == 0:
                answer.client.ready.set()
        if self.unacked < self.max_unacked:
            self.room.set()

    def _flush(self) -> None:
        self._flush_pending = False
        for link in self.links:
            link.flush()

    def _dispatch(self, client: Client, events: list[Incoming], batch: bool) -> None:
        """Stamp the events with arrival seqs and queue them for their shards."""
        count = len(events)
        first = self.sequence.take(count)
        answer = Answer(client, count)
        links = self.links
        shard_of = self.ring.shard_of
        seq = first
        for account, event_id, payload in events:
            links[shard_of(account)].add([seq, account, event_id, payload], answer)
            seq += 1
        if batch:
            answer.body = orjson.dumps({"ack": list(range(first, first + count))})
        else:
            answer.body = b'{"ack":%d}' % first
        client.owe(answer)
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _health_doc(self) -> tuple[bool, dict[str, Any]]:
        """Whether this router can take events now, and the details."""
        connected = sum(link.connected for link in self.links)
        ok = connected == len(self.links)
        return ok, {"shards": len(self.links), "shards_connected": connected}

    def _warn_of_orphans(self) -> None:
        """Journals of shards beyond K: their unfinished events wait until K is raised again."""
        for journal in self.state.glob("shard-*/journal-*.log"):
            index = int(journal.parent.name.split("-", 1)[1])
            if index >= len(self.links) and journal.stat().st_size > EMPTY_JOURNAL:
                log.warning(
                    "%s belongs to shard %d but shards = %d: its unfinished events do not run "
                    "(change shards only when the executor is idle)",
                    journal,
                    index,
                    len(self.links),
                )

    async def _start(self, stop: asyncio.Event) -> list[asyncio.Task[None]] | None:
        """A task per shard keeping its link up."""
        self._warn_of_orphans()
        return [asyncio.create_task(link.keep_connected()) for link in self.links]

    async def _finish(self) -> None:
        for link in self.links:
            link.close()

    def _in_transit(self) -> bool:
        """Events sent on that may still be acked (by a shard that is up)."""
        return any(link.connected and link.backlog for link in self.links)

    def _describe(self) -> str:
        return f"{len(self.links)} shards"

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "shards_connected": sum(link.connected for link in self.links),
            "backlog": [link.backlog for link in self.links],
            "shard_connects": [link.connects for link in self.links],
            "next_seq": self.sequence.next,
        }


def run(ctx: ChildContext) -> None:
    """ChildSpec target of the router (role ``executor-router``)."""
    shards = ctx.settings.executor.shard_count(os.cpu_count())
    # One line per client connection is too much: keep websockets' warnings only.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    router: Ingest
    if ctx.settings.cluster.enabled:
        from .clusterrouter import ClusterRouter  # nats-py is loaded in cluster mode only

        router = ClusterRouter(ctx.settings, shards, ready=ctx.ready, listener=ctx.listener)
    else:
        router = Router(
            ctx.settings, shards, ready=ctx.ready, listener=ctx.listener, changed=ctx.publish_soon
        )
    tune_gc()
    ctx.serve(router.main, router.stats)
