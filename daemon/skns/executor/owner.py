"""A shard in cluster mode: the owner of some of the stream's partitions.

Every ``PLACE_INTERVAL`` s the owner reads the roster of live hosts and works
out, as every process of every host does alike (:mod:`skns.executor.placement`),
which partitions this host runs and which of them are this shard's. It takes
each of those whose lease it can create, and hands over each it holds and
should not any more.

Per partition it holds (:class:`Partition`):

* the lease, renewed every ``lease_ttl / 6`` s; once it is not certain to hold
  it (``Lease.held``: its life less a margin of ``lease_ttl / 3``) the partition
  stops at once, its runs cancelled and nothing committed (fencing: stopped
  before the lease can expire and another owner start);
* a consumer of its subject from the committed watermark + 1 (an ephemeral
  pull consumer read through :class:`~skns.executor.pull.Reader` on the lean
  connection, made again from the last sequence delivered whenever it is lost: a
  NATS node died, the connection dropped, a delivery gap), feeding a
  :class:`~skns.executor.runner.Runner` (the shards' per-account FIFOs,
  retries, timeouts, thread pool), skipping the sequences the commit says
  finished;
* its :class:`~skns.executor.progress.Progress`, committed to the key-value
  store every ``COMMIT_INTERVAL`` s when it changed (compare-and-set on the
  revision this owner last wrote, so an owner that missed losing its lease
  cannot overwrite its successor's commit), and the subject purged below the
  committed watermark (at most every ``TRIM_INTERVAL`` s).

A handover (the assignment changed, or the shard stops) stops pulling, lets the
running events finish for up to ``drain_timeout``, commits, and releases the
lease, so the next owner takes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from .. import jsonexact
from ..child import ChildContext
from ..cluster.connection import Connection
from ..cluster.lean import Lean, NotConnected
from ..cluster.leankv import LeanKV
from ..cluster.lease import Lease
from ..config import Settings
from ..errors import ProtocolError
from . import jetstream, layout
from .events import Event
from .handlers import HandlerEnv
from .placement import host_partitions, shard_partitions
from .progress import Progress
from .pull import Reader, make_consumer
from .runner import Handler, Runner
from .tuning import tune_gc

log = logging.getLogger("skns.executor.owner")

PLACE_INTERVAL = 0.5  # seconds between looks at the roster
COMMIT_INTERVAL = 0.1  # seconds between commits of a partition's progress (when changed)
TRIM_INTERVAL = 10.0  # most seconds between purges of a busy partition's subject
IDLE_TRIM = 1.0  # seconds without a delivery after which a partition's subject is purged
PULL_WAIT = 5.0  # seconds a pull request stays open (events are delivered as they come)
FETCH_MAX = 512  # events asked for in one pull request
INACTIVE = 30.0  # seconds before the server drops the consumer of an owner that is gone
STATUS_LAGS = 128  # partitions whose lag the status shows, the most lagging first
STATUS_READERS = 16  # partitions whose reader the status shows, the longest idle first
# Seconds without a delivery before a pull is checked against what the stream holds (a
# consumer that answers every pull at its expiry and delivers nothing would stall its
# partition with the lease held and /health 200).
STALL_AFTER = 10.0
CONSUMER_TIMEOUT = 2.0  # seconds to make a consumer before trying again
CLOSE_WAIT = 2.0  # seconds a stopped partition's tasks get to end
_ERRORS = (APIError, NatsError, TimeoutError, NotConnected)


class Partition:
    """One partition while this shard owns it."""

    def __init__(self, owner: Owner, number: int) -> None:
        self.owner = owner
        self.number = number
        self.loop = asyncio.get_running_loop()  # kept: asyncio's lookup is a syscall (getpid)
        self.key = jetstream.key(number)
        self.subject = jetstream.subject(number)
        ttl = owner.cluster.lease_ttl
        self.lease = Lease(
            owner.leases_kv,
            self.key,
            owner.holder,
            ttl,
            ttl / 3,
            js=owner.buckets.quick,
            bucket=jetstream.LEASES,
        )
        self.progress = Progress()
        self.revision: int | None = None  # of the commit this owner last wrote or read
        self.runner = Runner(owner.config, owner.handler, self._finished)
        self.reader: Reader | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.leaving = False
        self.lag = 0  # events in the stream not delivered to this owner yet
        self.trimmed_at = 0.0
        self.trimmed = 0  # watermark of the last purge
        # How its reader fares, for the status (a partition that stopped taking events
        # shows why: consumers made again and for what, pulls nobody answered).
        self.consumers = 0  # consumers made
        self.remade: dict[str, int] = {}  # why a consumer was made again -> times
        self.unanswered = 0  # pull requests with no answer at all
        self.leader_reads = 0  # events read from the stream's leader, its consumer stalled
        self.taken_at = 0.0  # loop time of the last delivery taken
        self.made_at = 0.0  # loop time its consumer was made
        self.checked_at = 0.0  # loop time of the last look at what the stream holds for it

    # -- start and stop ---------------------------------------------------------------------

    async def open(self) -> bool:
        """Read the commit and start running (the lease is held); False if it cannot."""
        try:
            entry = await self.owner.progress_kv.get(self.key)
            self.progress = Progress.decode(entry.value or b"")
            self.revision = entry.revision
        except KeyNotFoundError:
            self.progress, self.revision = Progress(), None
        except ProtocolError as exc:
            log.error("partition %d: damaged commit, starting from the stream's head: %s",
                      self.number, exc)  # fmt: skip
            self.progress = Progress()
        except _ERRORS as exc:
            log.warning("partition %d: cannot read its commit: %s", self.number, exc)
            return False
        self.trimmed = self.progress.watermark
        self.tasks = [
            asyncio.create_task(self._pull()),
            asyncio.create_task(self._keep()),
            asyncio.create_task(self._commit_loop()),
        ]
        for task in self.tasks:
            task.add_done_callback(self._loop_ended)
        log.info("running partition %d from sequence %d", self.number, self.progress.last + 1)
        return True

    async def close(self, graceful: bool) -> None:
        """Stop: gracefully (finish running events, commit, release the lease), or at
        once (fenced: the lease may be gone, so nothing is committed)."""
        self.leaving = True
        pull, keep, commit = self.tasks or (None, None, None)
        if pull is not None:
            pull.cancel()
        if commit is not None:
            commit.cancel()
        if graceful and self.lease.held():
            await self.runner.drain(self.owner.config.drain_timeout)
            if self.lease.held():
                await self.commit()
        else:
            await self.runner.cancel()
        if keep is not None:
            keep.cancel()
        if self.tasks:  # nats-py may swallow a cancellation: the pull loop also checks leaving
            await asyncio.wait(self.tasks, timeout=CLOSE_WAIT)
        if graceful:
            await self.lease.release()
        log.info("%s partition %d", "handed over" if graceful else "stopped", self.number)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """One of the partition's loops ended while it runs: an error none of them catches
        (a client library's surprise). Without its puller, renewer or committer the partition
        would keep its lease and take nothing, with /health at 200: it is stopped instead, and
        taken again from its commit once its lease is free."""
        if self.leaving or task.cancelled():
            return
        log.error("partition %d: its loop %s ended: %r; stopped, to run again from its commit",
                  self.number, task.get_coro().__qualname__, task.exception())  # fmt: skip
        self.owner.loop_failed(self)

    # -- events -------------------------------------------------------------------------

    def _finished(self, event: Event, ok: bool) -> None:
        self.progress.finished(event.seq)

    async def _consumer(self) -> Reader:
        """A new consumer of the partition from the last sequence taken + 1, and its reader."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.progress.last + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self.subject,
            inactive_threshold=INACTIVE,
            mem_storage=True,
            num_replicas=1,
        )
        # A short timeout: with a node of the stream's group down, nats-server 2.9 may place
        # the consumer on that node and never answer; the next try is placed anew.
        name = await make_consumer(self.owner.lean, jetstream.STREAM, config, CONSUMER_TIMEOUT)
        reader = Reader(self.owner.lean, jetstream.STREAM, name, self._take)
        reader.open()
        self.consumers += 1
        self.made_at = self.loop.time()
        return reader

    def _remade(self, why: str) -> None:
        self.remade[why] = self.remade.get(why, 0) + 1
        log.info("partition %d: %s; making its consumer again from sequence %d",
                 self.number, why, self.progress.last + 1)  # fmt: skip

    async def _pull(self) -> None:
        owner = self.owner
        try:
            while not self.leaving:
                reader = self.reader
                if reader is None or reader.lost:
                    if reader is not None:
                        self._remade(reader.why or "deliveries lost")
                        reader.close()
                        self.reader = None
                    if not owner.lean.connected:  # reconnecting: its consumer would be lost
                        await asyncio.sleep(0.2)
                        continue
                    try:
                        reader = self.reader = await self._consumer()
                    except _ERRORS as exc:
                        log.warning("partition %d: cannot make its consumer: %s", self.number, exc)
                        await asyncio.sleep(0.2)
                        continue
                room = owner.config.max_backlog - owner.backlog()
                if room <= 0:
                    await asyncio.sleep(0.05)
                    continue
                # Idle a while: what the stream holds for it now, before a whole pull.
                stored = await self._stored() if self._stall_check_due() else 0
                before = self.progress.last
                owner.pulls += 1
                try:
                    answered = await reader.pull(min(room, FETCH_MAX), PULL_WAIT)
                except _ERRORS as exc:
                    reader.lose(f"pull failed ({type(exc).__name__})")
                    continue
                # No answer at all, not even a heartbeat: is the consumer still there?
                if not answered:
                    self.unanswered += 1
                    if not await self._consumer_alive(reader):
                        reader.lose("consumer gone")
                # A consumer that answers and delivers nothing of what was stored before the
                # pull (say, one that lost its place and waits past it) is made again, and
                # what it held back is read from the stream's leader meanwhile.
                if stored > before == self.progress.last:
                    reader.lose(f"stalled: sequence {stored} stored, none past {before} delivered")
                    await self._read_from_leader(stored)
        finally:
            if self.reader is not None:
                self.reader.close()
                self.reader = None

    async def _read_from_leader(self, stored: int) -> None:
        """Take the events past the last one taken, up to ``stored``, one request each to
        the stream's leader (a batch at most). The way round a consumer that stalls again
        when made again: after a quorum loss nats-server 2.9 was seen placing a partition's
        new consumers, for a minute and more, on a replica that answered none of their
        pulls, while the leader held the events (acked, so they must run)."""
        js = self.owner.conn.js
        room = max(1, min(self.owner.config.max_backlog - self.owner.backlog(), FETCH_MAX))
        for _ in range(room):
            if self.leaving or self.progress.last >= stored:
                return
            try:
                msg = await js.get_msg(
                    jetstream.STREAM, seq=self.progress.last + 1, subject=self.subject, next=True
                )
            except _ERRORS as exc:  # NotFoundError: trimmed meanwhile, or none
                log.warning("partition %d: cannot read sequence %d on from the stream: %s",
                            self.number, self.progress.last + 1, exc)  # fmt: skip
                return
            self.leader_reads += 1
            self._take(msg.seq, msg.data or b"", max(0, stored - msg.seq))

    def _stall_check_due(self) -> bool:
        now = self.loop.time()
        if now - max(self.taken_at, self.made_at, self.checked_at) < STALL_AFTER:
            return False
        self.checked_at = now
        return True

    async def _stored(self) -> int:
        """The sequence of the last event on the partition's subject, as the stream's leader
        has it (0: none, or not known now)."""
        try:
            return (await self.owner.conn.js.get_last_msg(jetstream.STREAM, self.subject)).seq
        except _ERRORS as exc:  # NotFoundError: none
            log.debug("partition %d: last sequence not known: %s", self.number, exc)
            return 0

    def _take(self, seq: int, data: bytes, pending: int) -> None:
        if self.leaving:
            return  # handing over: what came last runs at the next owner
        self.lag = pending
        self.taken_at = self.loop.time()
        if not self.progress.delivered(seq):
            return  # finished before this owner took the partition
        try:
            account, event_id, payload = jsonexact.loads(data)
            if type(account) not in (int, str):
                raise TypeError("account_id")
        except (jsonexact.JSONDecodeError, ValueError, TypeError):
            # Not published by a router (someone else wrote to the subject): skipped.
            log.error("partition %d: sequence %d is not an event, skipped: %r",
                      self.number, seq, data[:200])  # fmt: skip
            self.owner.not_events += 1
            self.progress.finished(seq)
            return
        self.runner.admit(Event(seq, account, event_id, payload, self.owner.env))

    async def _consumer_alive(self, reader: Reader) -> bool:
        # Asked as briefly as a consumer is made: the info of a consumer whose node died is
        # never answered, and the partition waited publish_timeout (5 s) more to know it.
        js = self.owner.conn.jetstream(CONSUMER_TIMEOUT)
        try:
            await js.consumer_info(reader.stream, reader.consumer)
        except _ERRORS:
            return False
        return True

    # -- lease and commits --------------------------------------------------------------

    async def _keep(self) -> None:
        # Renewed twice as often as its margin: a renewal may take up to lease_ttl / 2 on
        # a loaded cluster and the lease is still held (fencing stops the partition once
        # the last renewal that succeeded was sent lease_ttl - margin ago).
        # The loops also check leaving: a client library may swallow a cancellation, and a
        # lease renewed for a stopped partition would keep it from every other owner.
        while not self.leaving:
            await self.owner.ticker.tick(self.lease.ttl / 6)
            if not self.leaving:
                await self.lease.renew()

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.leaving:
            await self.owner.ticker.tick(COMMIT_INTERVAL)
            if self.leaving:
                return
            if not self.lease.held():
                self.owner.fence(self)
                return
            if self.progress.changed and not await self.commit():
                self.owner.fence(self)
                return
            watermark = self.progress.watermark
            now = loop.time()
            unfinished = self.lag + self.progress.pending
            if trim_due(now, watermark, self.trimmed, self.trimmed_at, self.taken_at, unfinished):
                self.trimmed_at = now
                await self._trim(watermark)

    async def commit(self, tries: int = 2) -> bool:
        """Write the progress; False if another owner has written since (fenced)."""
        data = self.progress.encode()
        kv = self.owner.progress_kv
        try:
            if self.revision is None:
                self.revision = await kv.create(self.key, data)
            else:
                self.revision = await kv.update(self.key, data, last=self.revision)
        except KeyWrongLastSequenceError:
            if not self.lease.held():
                log.warning("partition %d: another owner committed: stopping it", self.number)
                return False
            # Still the lease holder: an earlier commit of ours whose answer was lost (timed
            # out, or cancelled by a handover) landed. Take its revision and write again.
            self.progress.changed = True
            if tries > 1 and await self._reread():
                return await self.commit(tries - 1)
            return True
        except _ERRORS as exc:
            self.progress.changed = True  # tried again on the next round
            log.debug("partition %d: commit failed: %s", self.number, exc)
            return True
        self.owner.commits += 1
        return True

    async def _reread(self) -> bool:
        """Take the revision of the commit stored now; False if it cannot be read."""
        try:
            entry = await self.owner.progress_kv.get(self.key)
        except _ERRORS:
            return False
        self.revision = entry.revision
        return True

    async def _trim(self, watermark: int) -> None:
        try:
            await self.owner.conn.js.purge_stream(
                jetstream.STREAM, subject=self.subject, seq=watermark + 1
            )
            self.trimmed = watermark
        except _ERRORS as exc:
            log.debug("partition %d: purge failed: %s", self.number, exc)

    def stats(self) -> dict[str, Any]:
        return {
            "watermark": self.progress.watermark,
            "lag": self.lag + self.progress.pending,
            **self.runner.stats(),
        }

    def reader_status(self) -> dict[str, Any]:
        """Its reader for the status: consumers made, why made again, pulls unanswered,
        seconds since the last delivery (None: none yet)."""
        now = self.loop.time()
        return {
            "consumer": self.reader.consumer if self.reader is not None else None,
            "consumers": self.consumers,
            "remade": self.remade,
            "unanswered": self.unanswered,
            "leader_reads": self.leader_reads,
            "idle": round(now - self.taken_at, 1) if self.taken_at else None,
        }


def trim_due(
    now: float, watermark: int, trimmed: int, trimmed_at: float, taken_at: float, unfinished: int
) -> bool:
    """Whether a partition's subject is purged below its ``watermark`` now (``trimmed``:
    the watermark of its last purge, at ``trimmed_at``; ``taken_at``: its last delivery;
    ``unfinished``: events not delivered or not finished).

    Purges are costly for the stream's leader: rare while events flow (every
    ``TRIM_INTERVAL``), soon once the partition is idle. Idle is nothing delivered for
    ``IDLE_TRIM`` s, not merely nothing unfinished at this tick: a busy partition whose events
    run at once has nothing unfinished at most ticks, and was purged every second."""
    if watermark <= trimmed:
        return False
    idle = unfinished == 0 and now - max(taken_at, trimmed_at) >= IDLE_TRIM
    return idle or now - trimmed_at >= TRIM_INTERVAL


class Ticker:
    """Sleeps until the next multiple of an interval on the loop's clock.

    Every partition's renewals (and commits) fall in the same loop iteration, so they go
    out in one write and their answers come back together: with 16 partitions a shard, 16
    wakeups and writes become one (the idle shards' CPU, see the README). And one timer
    wakes all who wait for the same tick, not a timer each (made, started, closed and freed
    per partition per tick: 160 a second a shard for the commits alone).
    """

    def __init__(self) -> None:
        self._due: dict[tuple[float, int], list[asyncio.Future[None]]] = {}

    @property
    def timers(self) -> int:
        """Timers set (ticks someone waits for)."""
        return len(self._due)

    async def tick(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        key = (interval, int(loop.time() // interval) + 1)
        waiters = self._due.get(key)
        if waiters is None:
            waiters = self._due[key] = []
            loop.call_at(key[1] * interval, self._wake, key)
        future = loop.create_future()
        waiters.append(future)
        await future  # cancelled alone: the others' futures are their own

    def _wake(self, key: tuple[float, int]) -> None:
        for future in self._due.pop(key):
            if not future.done():
                future.set_result(None)


class Owner:
    """The shard process in cluster mode."""

    def __init__(self, settings: Settings, index: int, ready: Any = lambda: None) -> None:
        self.ready = ready  # called once connected and set up
        self.config = settings.executor
        self.cluster = settings.cluster
        self.config_path = settings.path
        self.index = index
        self.shards = self.config.shard_count(os.cpu_count())
        state = settings.service.state_dir / "executor"
        self.directory = state / f"shard-{index}"
        self.instance = jetstream.instance_id(state)
        self.holder = f"{self.cluster.host_name}/{index}/{os.getpid()}"
        self.conn = Connection(self.cluster, f"executor-shard {index}")
        self.lean = Lean(self.cluster, f"executor-shard {index}")  # the pulls and deliveries
        self.lean.on_lost.append(self._lean_lost)
        self.handler = Handler(self.config)
        self.env = HandlerEnv(index, self.config.duration, self.directory)
        self.buckets: Any = None
        # Lease renewals and commits: updates over the lean connection (bound in _set_up).
        self.leases_kv: Any = None
        self.progress_kv: Any = None
        self.partitions: dict[int, Partition] = {}
        self.ticker = Ticker()  # the partitions' renewals and commits
        self.desired: list[int] = []
        self.hosts: list[str] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.takes = 0
        self.handovers = 0
        self.lease_losses = 0
        self.loop_failures = 0  # partitions stopped because one of their loops ended
        self.commits = 0
        self.pulls = 0  # pull requests made (one open per partition at a time)
        self.not_events = 0  # messages on a partition's subject that are not events
        self.done = 0  # events finished in partitions this shard no longer holds
        self.failed = 0

    def backlog(self) -> int:
        return sum(p.runner.scheduler.queued for p in self.partitions.values())

    def _lean_lost(self) -> None:
        """Deliveries may have been lost with the connection: every consumer is made again."""
        for partition in self.partitions.values():
            if partition.reader is not None:
                partition.reader.drop()

    def fence(self, partition: Partition) -> None:
        """``partition``'s lease may be lost: stop it at once."""
        if partition.leaving:
            return
        self.lease_losses += 1
        log.warning("partition %d: lease not renewed in time: stopped", partition.number)
        self._close(partition, graceful=False)

    def loop_failed(self, partition: Partition) -> None:
        """One of ``partition``'s loops ended on an error: stop it at once (its lease lapses,
        and it runs again from its commit)."""
        self.loop_failures += 1
        self._close(partition, graceful=False)

    def _close(self, partition: Partition, graceful: bool) -> None:
        partition.leaving = True

        async def close() -> None:
            try:
                await partition.close(graceful)
            finally:
                self.done += partition.runner.done
                self.failed += partition.runner.failed
                if self.partitions.get(partition.number) is partition:
                    del self.partitions[partition.number]

        task = asyncio.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _place(self) -> None:
        """Take the partitions this shard should run; hand over those it should not."""
        name = self.cluster.host_name
        quick = self.cluster.lease_ttl / 2
        try:
            self.hosts = await jetstream.live_hosts(self.lean, quick)
            entry = None
            if name in self.hosts:
                entry = await jetstream.kv_get(self.lean, jetstream.HOSTS, name, quick)
                if entry is None:  # gone since: look again next time
                    return
        except _ERRORS as exc:
            log.debug("cannot read the roster: %s", exc)
            return
        # Only while this host's router holds the name for this instance (a second host
        # given the same name must not run the first one's partitions).
        if entry == self.instance.encode():
            mine = host_partitions(self.cluster.partitions, self.hosts, name)
            self.desired = shard_partitions(mine, self.shards, self.index)
        else:
            self.desired = []
        desired = set(self.desired)
        for number, partition in list(self.partitions.items()):
            if number not in desired and not partition.leaving:
                self.handovers += 1
                self._close(partition, graceful=True)
        for number in self.desired:
            if number in self.partitions:
                continue
            partition = Partition(self, number)
            if not await partition.lease.take():
                continue
            self.partitions[number] = partition
            if await partition.open():
                self.takes += 1
            else:
                del self.partitions[number]
                await partition.lease.release()

    async def _set_up(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            try:
                self.buckets = buckets = await jetstream.set_up(
                    self.conn, self.cluster, create=False
                )
                # Nothing runs on another layout than the cluster's (raises LayoutMismatch).
                await layout.agree(
                    self.conn.admin, buckets, self.cluster, self.config_path, create=False
                )
                # As quick as the buckets' own requests (see jetstream.set_up).
                quick = self.cluster.lease_ttl / 2
                self.leases_kv = LeanKV(self.lean, buckets.leases, jetstream.LEASES, quick)
                self.progress_kv = LeanKV(self.lean, buckets.progress, jetstream.PROGRESS, quick)
                return True
            except NotFoundError:  # this host's router makes them (and the record)
                delay = 0.2
            except _ERRORS as exc:
                log.warning("cannot bind the executor's stream and buckets yet: %s", exc)
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return False

    async def main(self, stop: asyncio.Event) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not await self.conn.open(stop) or not await self.lean.open(stop):
            return
        if not await self._set_up(stop):
            await self.lean.close()
            return
        self.ready()
        try:
            while not stop.is_set():
                await self._place()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), PLACE_INTERVAL)
        finally:
            for partition in list(self.partitions.values()):
                if not partition.leaving:
                    self._close(partition, graceful=True)
            if self._closing:
                await asyncio.wait(set(self._closing))
            self.handler.shutdown()
            await self.lean.close()
            await self.conn.close()

    def stats(self) -> dict[str, Any]:
        parts = {n: p.stats() for n, p in sorted(self.partitions.items())}
        lags = sorted(((s["lag"], n) for n, s in parts.items()), reverse=True)[:STATUS_LAGS]
        idlest = sorted(self.partitions.values(), key=lambda p: p.taken_at)
        return {
            "shard": self.index,
            "cluster": self.conn.status(),
            "lean": self.lean.status(),
            "partitions": list(parts),
            "desired": self.desired,
            "hosts": self.hosts,
            # Events of each partition not finished: in the stream and not delivered yet, or
            # delivered and not finished (the most lagging, for a status under 16 KiB).
            "lag": {str(n): lag for lag, n in sorted(lags, key=lambda x: x[1])},
            "lag_total": sum(s["lag"] for s in parts.values()),
            # The readers of the partitions idle the longest (a stalled one: remade, unanswered).
            "readers": {str(p.number): p.reader_status() for p in idlest[:STATUS_READERS]},
            "in_flight": sum(s["in_flight"] for s in parts.values()),
            "backlog": sum(s["backlog"] for s in parts.values()),
            "done": self.done + sum(s["done"] for s in parts.values()),
            "failed": self.failed + sum(s["failed"] for s in parts.values()),
            "retries": sum(s["retries"] for s in parts.values()),
            "takes": self.takes,
            "handovers": self.handovers,
            "lease_losses": self.lease_losses,
            "loop_failures": self.loop_failures,
            "commits": self.commits,
            "pulls": self.pulls,
            "not_events": self.not_events,
        }


def run(ctx: ChildContext) -> None:
    """ChildSpec target of a shard in cluster mode (role ``executor-shard``)."""
    owner = Owner(ctx.settings, ctx.spec.index, ready=ctx.ready)
    tune_gc()
    ctx.serve(owner.main, owner.stats)
