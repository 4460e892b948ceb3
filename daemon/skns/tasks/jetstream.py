"""The task server's NATS side: jobs and results shared by every host of a cluster.

Cluster mode only (``[cluster] nats`` set): nats-py is imported from here alone.

* A job accepted by any host goes to the work-queue stream of its queue
  (``SKNS_TASKS_SOFT`` or ``SKNS_TASKS_HARD``); the client's ``result`` ack is
  sent once JetStream has acknowledged it. A full stream (``max_queued``) or a
  cluster that does not answer within ``publish_timeout`` is a ``Server busy``.
* Every host's pools pull from both streams through one shared durable consumer
  per stream, never holding more than their workers can start (``workers x
  prefetch``), and ack a job once its outcome is stored. While a host holds a
  job (waiting for a worker or running) it tells JetStream so every ``_HOLD`` / 3
  seconds ("in progress"), so a host that dies leaves its jobs to the others
  after ``_HOLD`` seconds, however long their limits. The limits stay local: the
  pool SIGKILLs a job at its limit and the outcome is the ``Timeout error``.
* A job is published with its task id as message id, and a publish not answered
  in time is tried again with the same id until ``publish_timeout`` has passed:
  JetStream keeps one copy (its duplicate window), so an ack that was lost or
  late is had on the next try and the job is acked to its client. A job no try
  got an answer for is ``Server busy``, and the frame says it may still run.
* A job given up by JetStream after ``max_deliver`` deliveries (each of its hosts
  died, or stopped, before storing its outcome) is announced on the consumer's
  max-deliveries advisory: every host hears it, and the first to replace the
  job's pending entry (compare-and-set on its revision) stores ``Task failed``
  as its outcome and deletes the job from the stream.
* Outcomes go to the key-value bucket ``skns_tasks`` (entries expire
  ``result_ttl`` after they are written) as ``<state>\\n<final frame>``; one too
  big for a NATS message is stored whole in the object store ``skns_tasks_big``
  (chunked, same expiry) and its entry is ``<state>\\n``. The entry is created as
  ``queued`` when the job is accepted, so any host knows the id from then on, and
  set to ``running`` by the host that pulls the job (before its outcome, in order).
* When an outcome is stored, the id is announced on ``skns.tasks.done``. A host
  that waits for that task (it took the job, or a client fetched it there while
  pending) reads the outcome and pushes it as on one host. After a reconnect
  (announcements may have been lost meanwhile) every awaited task is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from ..cluster.connection import Connection
from ..cluster.fixed import refusal, same
from ..cluster.settings import ClusterSettings
from . import protocol
from .store import FAILED, QUEUED, RUNNING, Task

if TYPE_CHECKING:
    from .server import Outbox, TaskServer

log = logging.getLogger("skns.tasks.jetstream")

STREAMS = {queue: f"SKNS_TASKS_{queue.upper()}" for queue in protocol.QUEUES}
SUBJECTS = {queue: f"skns.tasks.{queue}" for queue in protocol.QUEUES}
CONSUMER = "workers"
RESULTS = "skns_tasks"
BIG_RESULTS = "skns_tasks_big"
DONE = "skns.tasks.done"
# JetStream's advisory for a message that reached the consumer's max_deliver.
GIVEN_UP = {
    queue: f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{CONSUMER}"
    for queue, stream in STREAMS.items()
}

_STREAM_FULL = 10077  # JetStream's "maximum messages exceeded" (discard new)
_MAX_DELIVER = 3  # deliveries of a job before it is given up ("Task failed")
# Seconds a job may go without word from its holder before JetStream gives it to another
# host (the consumer's ack_wait): the holder says "in progress" three times within it.
_HOLD = 6.0
_HEADROOM = 4096  # bytes of a NATS message left for its subject and headers
_PULL_WAIT = 1.0  # seconds one pull request waits for a job
_SETUP_RETRY = 1.0  # seconds between tries to set up the streams and buckets
_BURST_WAIT = 0.005  # seconds the pull of the jobs waiting behind it may linger
_PUBLISH_TRIES = 3  # a publish is tried this often within publish_timeout when unanswered


def encode(state: str, frame: bytes) -> bytes:
    return state.encode() + b"\n" + frame


def decode(value: bytes) -> tuple[str, bytes]:
    """(state, final frame); the frame is empty when it is in the object store."""
    state, _, frame = value.partition(b"\n")
    return state.decode(), frame


class ClusterTasks:
    """Submits, pulls, stores and announces jobs for one task server."""

    def __init__(self, server: TaskServer, settings: ClusterSettings) -> None:
        self.server = server
        self.settings = settings
        # Unbuffered: a job refused as "Server busy" while disconnected must not be
        # published later by the client library, and run after all.
        self.conn = Connection(settings, "tasks", buffer=False)
        self.kv: Any = None
        self.objects: Any = None
        self.awaited: dict[str, Task] = {}  # tasks whose outcome another host may store
        self._held: dict[str, Any] = {}  # pulled job's task id -> its JetStream message
        self._running: dict[str, asyncio.Future[None]] = {}  # "running" marks being written
        self._in_pool = dict.fromkeys(protocol.QUEUES, 0)  # pulled jobs not finished yet
        self._room = {queue: asyncio.Event() for queue in protocol.QUEUES}
        self._background: set[asyncio.Task[None]] = set()
        self.published = 0
        self.pulled = 0
        self.stored = 0
        self.stored_big = 0
        self.pushed = 0
        self.given_up = 0
        self.errors = 0

    # -- life cycle -------------------------------------------------------------

    async def start(self, stop: asyncio.Event) -> bool:
        """Connect, make the streams and buckets, start pulling; False if stopped first.
        Raises LayoutMismatch when the results bucket was made with another ``result_ttl``.

        JetStream may not answer yet (its streams elect their leaders after an outage):
        the set-up is tried again until it succeeds or the server is told to stop."""
        if not await self.conn.open(stop):
            return False
        while not stop.is_set():
            try:
                await self._set_up()
                return True
            except (APIError, NatsError, TimeoutError) as exc:
                log.warning("cannot set up the task streams and buckets yet: %s; retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _SETUP_RETRY)
        return False

    async def _set_up(self) -> None:
        s = self.server.settings
        js = self.conn.admin
        replicas = self.settings.replicas
        for queue in protocol.QUEUES:
            await self.conn.stream(
                api.StreamConfig(
                    name=STREAMS[queue],
                    subjects=[SUBJECTS[queue]],
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    storage=api.StorageType.FILE,
                    num_replicas=replicas,
                    max_msgs=s.max_queued,
                    discard=api.DiscardPolicy.NEW,
                )
            )
        ttl, storage = s.result_ttl, api.StorageType.FILE
        self.kv = await _bucket(
            lambda: js.create_key_value(
                api.KeyValueConfig(bucket=RESULTS, ttl=ttl, replicas=replicas, storage=storage)
            ),
            lambda: js.key_value(RESULTS),
        )
        self.objects = await _bucket(
            lambda: js.create_object_store(
                BIG_RESULTS,
                api.ObjectStoreConfig(ttl=ttl, replicas=replicas, storage=storage),
            ),
            lambda: js.object_store(BIG_RESULTS),
        )
        made = (await self.kv.status()).ttl
        if made is not None and not same(ttl, made):
            why = "results would expire after the bucket's time, not this host's"
            raise refusal("[tasks] result_ttl", ttl, self.server.config_path, made, why)
        assert self.conn.nc is not None
        if not self.conn.on_reconnect:  # once, whatever the number of tries
            await self.conn.nc.subscribe(DONE, cb=self._announced)
            for queue, subject in GIVEN_UP.items():
                await self.conn.nc.subscribe(subject, cb=self._given_up_callback(queue))
            self.conn.on_reconnect.append(self._recheck)
        subs: dict[str, Any] = {}
        for queue in protocol.QUEUES:
            try:
                await js.add_consumer(
                    STREAMS[queue],
                    api.ConsumerConfig(
                        durable_name=CONSUMER,
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=_HOLD,
                        max_deliver=_MAX_DELIVER,
                        max_ack_pending=-1,
                    ),
                )
            except APIError as exc:  # an existing one is updated; one refused is used as it is
                log.info("%s consumer exists with another configuration: %s", queue, exc)
            subs[queue] = await js.pull_subscribe_bind(CONSUMER, stream=STREAMS[queue])
        for queue, sub in subs.items():  # only once both are bound: a retry starts afresh
            self._spawn(self._pull(queue, sub))
        self._spawn(self._keep_held())

    async def close(self) -> None:
        """Give back the jobs held and not finished: another host runs them at once."""
        for task in self._background:
            task.cancel()
        for msg in list(self._held.values()):
            with contextlib.suppress(NatsError):
                await msg.nak()
        self._held.clear()
        await self.conn.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the front end ----------------------------------------------------------

    async def answer(
        self, frame: bytes, item: Task | protocol.Fetch | None, outbox: Outbox
    ) -> bytes:
        """The immediate answer to a request, in cluster mode (see ``TaskServer._answer``)."""
        if item is None:
            return frame
        if type(item) is protocol.Fetch:
            return await self._fetch(item.task_id, outbox)
        assert type(item) is Task
        return await self._submit(item, frame, outbox)

    async def _submit(self, task: Task, ack: bytes, outbox: Outbox) -> bytes:
        job = orjson.dumps({"id": task.id, "n": task.number})
        # Awaited from before the publish: another host may run it and announce it at once.
        self.awaited[task.id] = task
        try:
            # Together: the marker is created only if absent, so it cannot overwrite an
            # outcome stored before it lands.
            await asyncio.gather(
                self._mark_queued(task.id), self._publish(SUBJECTS[task.queue], job, task.id)
            )
        except (APIError, NatsError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                detail = (
                    f"the cluster did not confirm the job within {self.settings.publish_timeout:g}"
                    f" s ({_PUBLISH_TRIES} tries): it may still have been queued, and would"
                    " then run although not acknowledged"
                )
            elif isinstance(exc, APIError) and exc.err_code == _STREAM_FULL:
                detail = f"the {task.queue} queue is full; try again later"
            else:
                detail = f"the cluster did not take the job: {exc}"
            refusal = protocol.error_frame(protocol.SERVER_BUSY, detail=detail)
            self.server.refused[protocol.SERVER_BUSY] += 1
            del self.awaited[task.id]
            outbox.owed -= 1  # not accepted: no final frame will come
            task.watchers = []
            self.server.store.finish(task, FAILED, refusal)
            return refusal
        self.published += 1
        return ack

    async def _publish(self, subject: str, job: bytes, task_id: str) -> None:
        """Publish a job, trying again with the same message id while ``publish_timeout``
        lasts; raises TimeoutError when no try was answered (stored or not: unknown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.publish_timeout
        each = self.settings.publish_timeout / _PUBLISH_TRIES
        while True:
            timeout = min(each, deadline - loop.time())
            try:
                await self.conn.js.publish(
                    subject, job, timeout=timeout, headers={"Nats-Msg-Id": task_id}
                )
                return
            except TimeoutError:  # lost, late or not taken: a retry is deduplicated
                if deadline - loop.time() <= each / 10:
                    raise

    async def _mark_queued(self, task_id: str) -> None:
        with contextlib.suppress(KeyWrongLastSequenceError):  # already running, or done
            await self.kv.create(task_id, encode(QUEUED, b""))

    async def _mark(self, task_id: str, state: str) -> None:
        try:
            await self.kv.put(task_id, encode(state, b""))
        except (APIError, NatsError, TimeoutError) as exc:  # only a status: the job runs on
            log.debug("cannot mark task %s %s: %s", task_id, state, exc)

    async def _fetch(self, task_id: str, outbox: Outbox) -> bytes:
        """A task this host holds no outcome of: ask the cluster."""
        try:
            outcome = await self._read(task_id)
        except (APIError, NatsError, TimeoutError) as exc:
            self.errors += 1
            self.server.refused[protocol.SERVER_BUSY] += 1
            return protocol.error_frame(
                protocol.SERVER_BUSY, detail=f"the cluster did not answer: {exc}"
            )
        if outcome is None:
            self.server.refused[protocol.TASK_NOT_FOUND] += 1
            return protocol.not_found_frame(task_id)
        state, frame = outcome
        if frame:
            return frame
        task = self.awaited.get(task_id)
        if task is not None:  # this host waits for it already
            task.state = state
            if outbox not in task.watchers:
                task.watchers.append(outbox)
                outbox.expect()
            return protocol.pending_frame(task_id, state)
        # Pending on another host: wait for it here too, as for a task of this host.
        task = Task(task_id, 0, "", [outbox])
        task.state = state
        outbox.expect()
        self.server.store.add(task)
        self.awaited[task_id] = task
        # Its announcement may have gone between the read and now: read once more, after
        # this answer is written (the task runs on the next turn of the loop).
        self._spawn(self._land(task_id))
        return protocol.pending_frame(task_id, state)

    async def _read(self, task_id: str) -> tuple[str, bytes] | None:
        """(state, frame) of a task from the bucket (frame empty while pending); None: unknown."""
        try:
            entry = await self.kv.get(task_id)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        state, frame = decode(entry.value)
        if state not in (QUEUED, RUNNING) and not frame:
            frame = (await self.objects.get(task_id)).data
        return state, frame

    async def _announced(self, msg: Any) -> None:
        task_id = msg.data.decode(errors="replace")
        if task_id in self.awaited:
            self._spawn(self._land(task_id))

    async def _land(self, task_id: str) -> None:
        """Read an awaited task's outcome; push it if it is there."""
        try:
            outcome = await self._read(task_id)
        except (APIError, NatsError, TimeoutError) as exc:
            self.errors += 1
            log.warning("cannot read the outcome of task %s: %s", task_id, exc)
            return
        task = self.awaited.get(task_id)
        if outcome is None or not outcome[1] or task is None:
            return
        del self.awaited[task_id]
        state, frame = outcome
        self.pushed += 1
        self.server._finished(task, state, frame)

    async def _recheck(self) -> None:
        for task_id in list(self.awaited):
            self._spawn(self._land(task_id))

    # -- the workers ------------------------------------------------------------

    async def _pull(self, queue: str, sub: Any) -> None:
        """Take jobs off the stream as fast as this host's workers can start them."""
        pool = self.server.pools[queue]
        room = self._room[queue]
        capacity = pool.size * pool.prefetch
        while True:
            free = capacity - self._in_pool[queue]
            if free <= 0:
                room.clear()
                await room.wait()
                continue
            try:
                # A fetch of n waits until n jobs came or its time ran out: wait for one
                # and start it, then take those already waiting, up to what the workers
                # can start.
                waiting = 0
                for msg in await sub.fetch(1, timeout=_PULL_WAIT):
                    self._take(queue, msg)
                    waiting = msg.metadata.num_pending  # jobs behind it in the stream
                if free > 1 and waiting:
                    with contextlib.suppress(NatsTimeout, TimeoutError):
                        for msg in await sub.fetch(free - 1, timeout=_BURST_WAIT):
                            self._take(queue, msg)
            except (NatsTimeout, TimeoutError):  # no job within _PULL_WAIT
                continue
            except (APIError, NatsError) as exc:
                log.debug("%s pull: %s", queue, exc)
                await asyncio.sleep(_PULL_WAIT)

    async def _keep_held(self) -> None:
        """Tell JetStream, well inside its ack_wait, that every job held here is still
        being worked on (one waiting for a worker included)."""
        while True:
            await asyncio.sleep(_HOLD / 3)
            for msg in list(self._held.values()):
                try:
                    await msg.in_progress()
                except (APIError, NatsError) as exc:  # cut off: it may go to another host
                    log.debug("cannot say a job is in progress: %s", exc)
                    break

    def _take(self, queue: str, msg: Any) -> None:
        job = _job(msg.data)
        if job is None:
            log.error("%s stream: a malformed job dropped: %r", queue, msg.data[:200])
            self._spawn(msg.term())
            return
        task_id, number = job
        if task_id in self._held:  # redelivered while still here: keep the one we run
            return
        self.pulled += 1
        self._held[task_id] = msg
        self._in_pool[queue] += 1
        # Any host fetching it from now says "running"; the outcome is written after this.
        self._running[task_id] = asyncio.ensure_future(self._mark(task_id, RUNNING))
        self.server.pools[queue].submit(Task(task_id, number, queue, []))

    def ran(self, task: Task, state: str, frame: bytes) -> None:
        """The pools' finish callback in cluster mode: store, ack, announce."""
        self._in_pool[task.queue] -= 1
        self._room[task.queue].set()
        self._spawn(self._store(task, state, frame))

    async def _store(self, task: Task, state: str, frame: bytes) -> None:
        msg = self._held.get(task.id)
        marked = self._running.pop(task.id, None)
        if marked is not None:  # in this order, so "running" never overwrites the outcome
            await marked
        try:
            value = encode(state, frame)
            assert self.conn.nc is not None
            if len(value) > self.conn.nc.max_payload - _HEADROOM:
                await self.objects.put(task.id, frame)
                value = encode(state, b"")
                self.stored_big += 1
            await self.kv.put(task.id, value)
            if msg is not None:
                await msg.ack()
            await self.conn.nc.publish(DONE, task.id.encode())
            self.stored += 1
        except (APIError, NatsError, TimeoutError) as exc:
            # Not acked: JetStream gives the job to a host again after ack_wait.
            self.errors += 1
            log.warning("cannot store the outcome of task %s: %s", task.id, exc)
        finally:
            self._held.pop(task.id, None)

    def _given_up_callback(self, queue: str) -> Callable[[Any], Awaitable[None]]:
        async def given_up(msg: Any) -> None:
            self._spawn(self._give_up(queue, msg.data))

        return given_up

    async def _give_up(self, queue: str, advisory: bytes) -> None:
        """A job JetStream will not deliver again: store ``Task failed`` as its outcome,
        unless one is stored already, and take the job off the stream."""
        stream = STREAMS[queue]
        try:
            event = orjson.loads(advisory)
            seq, deliveries = event["stream_seq"], event["deliveries"]
            job = _job((await self.conn.js.get_msg(stream, seq)).data)
            if job is None:  # a malformed job is terminated, never given up
                return
            task_id = job[0]
            try:
                entry = await self.kv.get(task_id)
                pending = entry.value is not None and decode(entry.value)[0] in (QUEUED, RUNNING)
                revision = entry.revision if pending else None
            except KeyNotFoundError:  # its marker expired (result_ttl): write it afresh
                pending, revision = True, 0
            if pending:
                detail = (
                    f"given up after {deliveries} deliveries: each host that took the job"
                    " stopped before storing its outcome"
                )
                frame = protocol.failed_frame(task_id, detail)
                await self.kv.update(task_id, encode(FAILED, frame), last=revision)
                log.warning("task %s %s", task_id, detail)
                self.given_up += 1
                assert self.conn.nc is not None
                await self.conn.nc.publish(DONE, task_id.encode())
            await self.conn.js.delete_msg(stream, seq)  # out of max_queued's count
        except (KeyWrongLastSequenceError, NotFoundError):
            pass  # another host stored its outcome, or took it off the stream, first
        except (APIError, NatsError, TimeoutError, orjson.JSONDecodeError, KeyError) as exc:
            self.errors += 1
            log.warning("%s: cannot give up a job after its max deliveries: %s", queue, exc)

    # -- observation ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.conn.connected

    def stats(self) -> dict[str, Any]:
        return {
            **self.conn.status(),
            "published": self.published,
            "pulled": self.pulled,
            "held": len(self._held),
            "stored": self.stored,
            "stored_big": self.stored_big,
            "awaited": len(self.awaited),
            "pushed": self.pushed,
            "given_up": self.given_up,
            "errors": self.errors,
        }


def _job(data: bytes) -> tuple[str, int] | None:
    """(task id, number) of a job on a stream; None if malformed."""
    try:
        job = orjson.loads(data)
        task_id, number = job["id"], job["n"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    valid = type(task_id) is str and len(task_id) == 36 and task_id.isascii()
    valid = valid and type(number) is int and 0 <= number < 2**64
    return (task_id, number) if valid else None


async def _bucket(create: Callable[[], Awaitable[Any]], bind: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await create()
    except APIError as exc:  # exists with another configuration (another result_ttl)
        log.warning("a bucket exists with another configuration, used as it is: %s", exc)
        return await bind()
