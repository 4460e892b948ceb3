"""The task server: WebSocket connections in, jobs out to the two worker pools.

One process (role ``tasks``) runs this on uvloop. Each request gets its one
immediate answer from the connection's handler, in order; a job is handed to
its pool only after its ``result`` acknowledgement is written, so the
``success`` frame can never overtake it. Final frames (success, timeout,
failure) reach every connection watching the task through a per-connection
outbox drained by a writer task; a watcher that has gone is skipped, and the
outcome is stored all the same for whoever fetches it later.

One connection cannot take the server from the others: handlers take turns on
the loop after every request, the pools take one job of each connection in
turn (:mod:`skns.tasks.fairqueue`), and a connection with ``max_pending_per_connection``
jobs unfinished or final frames unwritten is not read until one is written
(its client's sends then wait in TCP buffers, see :class:`Outbox`).

``GET /health`` on the same port answers JSON: 200 while both pools have
workers (and, in cluster mode, NATS is connected), 503 otherwise. Any other
path is the WebSocket endpoint.

In cluster mode (``[cluster] nats`` set) jobs and outcomes go through NATS
JetStream, shared by every host (:mod:`skns.tasks.jetstream`): a submission is
acknowledged once JetStream holds the job, the pools run jobs pulled from the
cluster, and a task id this host does not hold is looked up there.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..listeners import serve_args
from ..wsflow import PacedServerConnection
from ..wslimit import ConnectionLimit, json_response
from . import keep, protocol
from .journal import FILE as JOURNAL_FILE
from .journal import Journal
from .pool import FinishFn, Pool
from .settings import TasksSettings
from .store import Store, Task

if TYPE_CHECKING:
    from pathlib import Path

    from ..child import ChildContext
    from ..cluster.settings import ClusterSettings
    from .jetstream import ClusterTasks

log = logging.getLogger("skns.tasks.server")

_SWEEP_INTERVAL = 1.0
# A frame larger than this goes out in fragments of this size, each written once the one
# before has drained from the write buffer (see send_frame).
FRAGMENT = 256 * 1024


async def send_frame(ws: ServerConnection, frame: bytes) -> None:
    """Send one text message, in fragments past ``FRAGMENT`` bytes.

    Written whole, a result is copied whole into the connection's write buffer, and stays
    there while its client does not read: 5.5 MB per connection that fetched 1,000,000!
    (200 such connections took 1.1 GB). In fragments, websockets writes the next one only
    once the previous one has drained below the buffer's high-water mark, so such a
    connection holds one fragment; the rest stays in the stored result, shared by all.
    A client reads the same message either way (fragments are reassembled)."""
    if len(frame) <= FRAGMENT:
        await ws.send(frame, text=True)
        return
    view = memoryview(frame)
    await ws.send((view[i : i + FRAGMENT] for i in range(0, len(view), FRAGMENT)), text=True)


class Outbox:
    """Frames on their way to one client, written in order by one writer task.

    It also counts what the connection has in flight: the final frames it is owed (its
    tasks not finished yet, and tasks it fetched while pending) plus those not written yet.
    At ``limit`` the connection's handler stops reading until a frame is written, so a
    client that sends without reading holds at most ``limit`` jobs and frames here, and
    the rest waits in its own socket buffers (TCP backpressure), not in the server.
    """

    __slots__ = ("_frames", "_room", "_waiter", "closed", "limit", "owed", "ws")

    def __init__(self, ws: ServerConnection, limit: int) -> None:
        self.ws = ws
        self.limit = limit
        self.owed = 0
        self.closed = False
        self._frames: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def expect(self) -> None:
        """One more final frame will be pushed here."""
        self.owed += 1

    @property
    def full(self) -> bool:
        return self.owed >= self.limit and not self.closed

    async def room(self) -> None:
        """Return once the connection may have one more frame in flight (or has closed)."""
        while self.full:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _wake_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            self._room = None
            room.set_result(None)

    def push(self, frame: bytes) -> None:
        if self.closed:
            return
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    async def write(self) -> None:
        loop = asyncio.get_running_loop()
        ws = self.ws
        try:
            while True:
                if not self._frames:
                    self._waiter = loop.create_future()
                    await self._waiter
                frames, self._frames = self._frames, []
                for frame in frames:
                    await send_frame(ws, frame)
                    self.owed -= 1
                    if self.owed < self.limit:
                        self._wake_room()
        except ConnectionClosed:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._wake_room()


class TaskServer:
    def __init__(
        self,
        settings: TasksSettings,
        ready: Callable[[], None] = lambda: None,
        listener: socket.socket | None = None,
        keep_path: Path | None = None,
        cluster: ClusterSettings | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path  # named by a refusal (a setting the cluster fixed)
        self.cluster_settings = cluster if cluster is not None and cluster.enabled else None
        self.cluster: ClusterTasks | None = None  # set once connected, in cluster mode
        # Where results and unfinished jobs wait across a restart (None: not kept), and
        # the journal that keeps them across a crash. Not in cluster mode: there
        # JetStream keeps the jobs and the outcomes.
        self.keep_path = keep_path if self.cluster_settings is None else None
        self.journal: Journal | None = None
        self.ready = ready  # called once the server listens and both pools have workers
        self.listener = listener  # the supervisor's socket on settings.listen; None: bind it
        self.store = Store(settings.result_ttl, settings.store_max_bytes)
        self.pools: dict[str, Pool] = {}
        self.port: int | None = None
        self.connections = 0
        self.connections_total = 0
        self.submitted = 0
        self.fetched = 0
        self.throttled = 0  # times a connection reached max_pending_per_connection
        self.refused: collections.Counter[str] = collections.Counter()
        # max_connections: a client that opens many connections cannot take the memory.
        self.limit = ConnectionLimit(settings.max_connections, self._health)

    # -- the child's main ---------------------------------------------------

    async def main(self, stop: asyncio.Event) -> None:
        s = self.settings
        cluster = None
        finish: FinishFn = self._finished
        if self.cluster_settings is not None:
            from .jetstream import ClusterTasks  # nats-py is loaded in cluster mode only

            cluster = ClusterTasks(self, self.cluster_settings)
            finish = cluster.ran  # the outcome of a job pulled from the cluster is stored there
        # The first workers are forked before listening; later ones close what they inherit.
        for queue in protocol.QUEUES:
            self.pools[queue] = Pool(
                queue, s.workers(queue), s.limit(queue), s.prefetch(queue), finish
            )
        try:
            for pool in self.pools.values():
                pool.start()
            if self.keep_path is not None:
                journal_path = self.keep_path.with_name(JOURNAL_FILE)
                # After a crash the journal; after a clean stop the file written then (and
                # the journal, if the stop was cut short before removing it).
                # Both in a thread: the loop beats on while a big journal is read and written.
                self._take_up(
                    await asyncio.to_thread(keep.load, (journal_path, self.keep_path), time.time())
                )
                self.journal = Journal(
                    journal_path, s.journal_compact_bytes, self.store.tasks, self.keep_path
                )
                await self.journal.start()
            if cluster is not None:
                if not await cluster.start(stop):
                    return  # stopped before NATS could be reached
                self.cluster = cluster
            async with serve(
                self._handler,
                **serve_args(s.listen, self.listener),
                process_request=self.limit.process_request,
                create_connection=PacedServerConnection,  # a ping flood cannot grow the buffer
                compression=None,  # deflating megabyte results would stall the loop
                max_size=s.max_request_bytes,
                logger=_connection_log(),
            ) as server:
                self.port = _bound_port(server)
                log.info(
                    "listening on %s:%d; soft: %d workers, %g s; hard: %d workers, %g s",
                    s.listen.host,
                    self.port,
                    self.pools["soft"].size,
                    s.soft_limit,
                    self.pools["hard"].size,
                    s.hard_limit,
                )
                sweeper = asyncio.create_task(self._sweep())
                self.ready()
                await stop.wait()
                sweeper.cancel()
                log.info("stopping: closing %d connections", self.connections)
        finally:
            if cluster is not None:
                await cluster.close()
            for pool in self.pools.values():
                pool.close()
            if self.journal is not None:
                self.journal.close()
            # A crash before the journal is removed replays it next time with the saved
            # file read last: the same tasks, taken up once.
            if self.keep_path is not None and self._keep(self.keep_path) and self.journal:
                self.journal.remove()

    def _take_up(self, kept: list[keep.Kept]) -> None:
        """Outcomes and jobs saved by the previous run: fetchable by id as before."""
        now = time.time()
        for k in kept:
            task = Task(k.id, k.number, k.queue, [])
            self.store.add(task)
            if k.finished and not k.recompute:
                self.store.finish(task, k.state, k.frame, ttl=k.expires - now)
            else:
                self.pools[k.queue].submit(task)
        if kept:
            log.info(
                "took up %d task(s) from before the restart (%d to run, %d results recomputed)",
                len(kept),
                sum(not k.finished or k.recompute for k in kept),
                sum(k.recompute for k in kept),
            )

    def _keep(self, path: Path) -> bool:
        try:
            n = keep.save(path, self.store.tasks(), time.time() - time.monotonic())
        except OSError as exc:
            log.error(
                "cannot keep the tasks in %s (%s): the next start takes up the journal",
                path,
                exc,
            )
            return False
        log.info("kept %d task(s) in %s for the next start", n, path)
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            self.store.sweep()

    # -- connections ----------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        outbox = Outbox(ws, self.settings.max_pending_per_connection)
        writer = asyncio.create_task(outbox.write())
        self.connections += 1
        self.connections_total += 1
        try:
            while True:
                # Text frames too as bytes (as the executor's ingest reads them): a text frame
                # that is not UTF-8 is then a JSON decode error like any other bad request,
                # not a 1007 close that loses the pushes owed to the connection and the
                # requests pipelined behind it.
                message = await ws.recv(decode=False)
                frame, task = self._answer(message, outbox)
                if self.cluster is not None:
                    # The job goes to the cluster, not to this host's pools; an id this
                    # host does not hold is asked of the cluster.
                    frame = await self.cluster.answer(frame, task, outbox)
                    task = None
                try:
                    await send_frame(ws, frame)
                finally:
                    # Accepted is accepted: the job runs and its outcome is kept even if
                    # the client has gone before reading the acknowledgement.
                    if task is not None:
                        self.pools[task.queue].submit(task, outbox)
                if outbox.full:  # backpressure: read no more until a frame went out
                    self.throttled += 1
                    await outbox.room()
                else:
                    # Take turns: frames already buffered are read without suspending, so
                    # a client pipelining thousands would otherwise hold the loop.
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            outbox.close()
            writer.cancel()

    def _answer(
        self, message: str | bytes, outbox: Outbox
    ) -> tuple[bytes, Task | protocol.Fetch | None]:
        """The immediate answer to one request, and the task it submits, if any.

        In cluster mode a fetch of a task this host holds no outcome of comes back as
        the Fetch itself, for the cluster to answer."""
        s = self.settings
        request = protocol.parse(message, s.soft_max, s.max_number)
        if type(request) is protocol.Submit:
            pool = self.pools[request.queue]
            # In cluster mode the stream's own limit (max_queued) refuses at publish.
            if self.cluster is None and pool.queued >= s.max_queued:
                self.refused[protocol.SERVER_BUSY] += 1
                return protocol.error_frame(
                    protocol.SERVER_BUSY,
                    detail=f"the {request.queue} queue holds {pool.queued} jobs; try again later",
                ), None
            task_id = str(uuid.uuid4())
            task = Task(task_id, request.number, request.queue, [outbox])
            # Written before it is acknowledged, or refused: nothing acked is lost to a crash.
            if self.journal is not None and not self.journal.accept(task):
                self.refused[protocol.SERVER_BUSY] += 1
                return protocol.error_frame(
                    protocol.SERVER_BUSY,
                    detail=f"the task journal cannot be written ({self.journal.error}), so a "
                    "job accepted now could be lost; try again later",
                ), None
            outbox.expect()
            self.store.add(task)
            self.submitted += 1
            return protocol.ack_frame(task_id), task
        if type(request) is protocol.Fetch:
            self.fetched += 1
            task = self.store.get(request.task_id)
            if self.cluster is not None and (task is None or not task.finished):
                return b"", request  # held elsewhere, or running on any host
            if task is None:
                self.refused[protocol.TASK_NOT_FOUND] += 1
                return protocol.not_found_frame(request.task_id), None
            if task.finished:
                return task.frame, None
            # Still queued or running: say so, and push the outcome here too when it comes.
            if outbox not in task.watchers:
                task.watchers.append(outbox)
                outbox.expect()
            return protocol.pending_frame(task.id, task.state), None
        assert type(request) is protocol.Refusal
        self.refused[request.reason] += 1
        return request.frame, None

    def _finished(self, task: Task, state: str, frame: bytes) -> None:
        watchers = task.watchers
        self.store.finish(task, state, frame)
        if self.journal is not None:
            self.journal.finished(task)
        for outbox in watchers:
            outbox.push(frame)

    # -- health and stats -----------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Healthy while both pools have workers (a replacement may be starting)."""
        pools = {queue: pool.stats() for queue, pool in self.pools.items()}
        healthy = all(stats["workers"] > 0 for stats in pools.values())
        if self.cluster_settings is not None:
            healthy = healthy and self.cluster is not None and self.cluster.connected
        body: dict[str, Any] = {
            "status": "ok" if healthy else "degraded",
            "connections": self.connections,
        }
        if self.cluster is not None:
            body["cluster"] = self.cluster.conn.status()
        for queue, stats in pools.items():
            body[queue] = {key: stats[key] for key in ("workers", "queued", "running")}
        return body

    def _health(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.partition("?")[0] != "/health":
            return None
        body = self.health()
        status = (
            http.HTTPStatus.OK if body["status"] == "ok" else http.HTTPStatus.SERVICE_UNAVAILABLE
        )
        return json_response(status, orjson.dumps(body))

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "connections": self.connections,
            "connections_total": self.connections_total,
            "submitted": self.submitted,
            "fetched": self.fetched,
            "throttled": self.throttled,
            "refused": dict(self.refused),
            **self.limit.stats(),
            **{queue: pool.stats() for queue, pool in self.pools.items()},
            "store": self.store.stats(),
            **({"cluster": self.cluster.stats()} if self.cluster is not None else {}),
            **({"journal": self.journal.stats()} if self.journal is not None else {}),
        }


def _connection_log() -> logging.Logger:
    """websockets logs every connection opened and closed at INFO: only worth it in debug."""
    connections = logging.getLogger("skns.tasks.connections")
    debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    connections.setLevel(logging.DEBUG if debugging else logging.WARNING)
    return connections


def _bound_port(server: Server) -> int:
    return next(iter(server.sockets)).getsockname()[1]


def run(ctx: ChildContext) -> None:
    """The target of the ``tasks`` child (see :mod:`skns.tasks.service`)."""
    server = TaskServer(
        ctx.settings.tasks,
        ready=ctx.ready,
        listener=ctx.listener,
        keep_path=ctx.settings.service.state_dir / "tasks" / keep.FILE,
        cluster=ctx.settings.cluster,
        config_path=ctx.settings.path,
    )
    ctx.serve(server.main, server.stats)
