"""The ``fleet`` child of the metrics subsystem: the fleet view over NATS JetStream.

Two jobs, on one connection:

* publish: every base window the supervisor spooled (:mod:`.fleetspool`) goes to
  the stream ``SKNS_FLEET`` as this host's partial, with the message id
  ``host@window-end`` (a republish after a restart is stored once), and leaves
  the spool only once JetStream acknowledged it;
* merge: the host holding the lease (key ``merger`` of the bucket ``skns_fleet``)
  reads every host's partials and appends the due fleet lines
  (:class:`.fleetmerge.Merger`) to ``fleet_output``. A new holder starts after
  the last line that file already holds (a fresh file: at the oldest window the
  stream holds), so a takeover neither doubles nor skips a line, also those the
  previous holder could not write; it writes only while its lease is inside its life
  (:class:`skns.cluster.lease.Lease`), so two holders never write at once. It follows
  a rotation as the host's own output does: asked to reopen (``skns-ctl reopen``,
  SIGHUP), it reopens ``fleet_output`` by path at its next write. Each holder also
  records the last lines it got into the file (bucket ``skns_fleet_tail``, a key per
  path and windows: :func:`.fleetmerge.tail_key`): a holder finding the file empty
  after a rotation resumes after them (:func:`.fleetmerge.resume_tail`), not up to an
  hour back.

Only this module (run in its own process) imports nats: the supervisor never
waits on the network.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError

from .. import jsonexact
from ..cluster.connection import Connection
from ..cluster.lease import Lease, lease_bucket
from . import fleetspool
from .fleetmerge import Merger, decode, encode, msg_id, resume_tail, tail_key
from .output import Output, last_lines
from .window import Schedule

if TYPE_CHECKING:
    from ..child import ChildContext
    from ..config import Settings

log = logging.getLogger("skns.metrics.fleet")

STREAM = "SKNS_FLEET"
SUBJECT = "skns.fleet"
BUCKET = "skns_fleet"
LEASE_KEY = "merger"
TAIL_BUCKET = "skns_fleet_tail"  # no use past the stream's life: its keys expire with it
_POLL = 0.05  # seconds between looks at the spool and at due windows
_RETRY = 0.5
_CLOSE = 2.0  # seconds a stop waits for the connection to drain
_ERRORS = (NatsError, JetStreamError, TimeoutError, OSError)


def run(ctx: ChildContext) -> None:
    fleet = Fleet(ctx.settings, ctx.reopens)
    ctx.ready()  # the spool holds the windows while NATS cannot be reached
    ctx.serve(fleet.main, fleet.status)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Fleet:
    def __init__(self, settings: Settings, reopens: Callable[[], int]) -> None:
        m, c = settings.metrics, settings.cluster
        assert m.fleet_path is not None
        self.cluster = c
        self.host = c.host_name
        self.path = m.fleet_path
        self.tail_key = tail_key(self.path, m.window, m.intervals)
        self.reopens = reopens  # the supervisor's reopen requests (ChildContext.reopens)
        self.spool = fleetspool.spool_dir(settings.service.state_dir)
        self.schedule = Schedule(m.window, m.intervals)
        self.grace = m.grace
        self.conn = Connection(c, "fleet")
        self.published = 0
        self.publish_errors = 0
        self.republished = 0
        self.bad_partials = 0
        self.tail_errors = 0  # records of the written tail that failed
        self.holder = False
        self.terms = 0  # times this host took the lease
        self.merger: Merger | None = None
        self.output: Output | None = None

    # -- connection and setup ---------------------------------------------------------

    async def main(self, stop: asyncio.Event) -> None:
        c = self.cluster
        if not await self.conn.open(stop):  # stopped before connected
            return
        js = self.conn.js
        tasks: list[asyncio.Task[None]] = []
        lease: Lease | None = None
        tails: Any = None
        try:
            while not stop.is_set() and lease is None:
                try:
                    await self.conn.stream(
                        api.StreamConfig(
                            name=STREAM,
                            subjects=[f"{SUBJECT}.>"],
                            max_age=fleetspool.KEEP,
                            duplicate_window=fleetspool.KEEP,
                            num_replicas=c.replicas,
                        )
                    )
                    tails = await lease_bucket(js, TAIL_BUCKET, fleetspool.KEEP, c.replicas)
                    kv = await lease_bucket(js, BUCKET, c.lease_ttl, c.replicas)
                    lease = Lease(
                        kv, LEASE_KEY, self.host, c.lease_ttl, c.lease_ttl / 3, js=js, bucket=BUCKET
                    )
                except _ERRORS as exc:
                    log.warning("cannot set up the fleet stream and lease: %s; retrying", exc)
                    await _pause(stop, _RETRY)
            if lease is None:
                return
            tasks = [
                asyncio.create_task(self._publish(js, stop)),
                asyncio.create_task(self._merge(js, lease, tails, stop)),
            ]
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if lease is not None:
                await lease.release()
            # A drain can outlast the stop while NATS is away: nothing of ours is in flight.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.conn.close(), _CLOSE)

    # -- publishing -------------------------------------------------------------------

    async def _publish(self, js: Any, stop: asyncio.Event) -> None:
        subject = f"{SUBJECT}.{self.host}"
        while not stop.is_set():
            wait = _POLL
            for path in fleetspool.pending(self.spool):
                try:
                    row = jsonexact.loads(path.read_bytes())
                    data = encode(self.host, row)
                    headers = {"Nats-Msg-Id": msg_id(self.host, float(row["timestamp"]))}
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self.bad_partials += 1
                    log.error("dropping unreadable spooled window %s: %s", path.name, exc)
                    path.unlink(missing_ok=True)
                    continue
                try:
                    ack = await js.publish(subject, data, stream=STREAM, headers=headers)
                except _ERRORS as exc:
                    self.publish_errors += 1
                    log.warning("cannot publish window %s: %s; retrying", row["timestamp"], exc)
                    wait = _RETRY
                    break
                path.unlink(missing_ok=True)
                self.published += 1
                # Published before (a crash between the ack and the unlink): stored once.
                self.republished += bool(ack.duplicate)
            await _pause(stop, wait)

    # -- merging ----------------------------------------------------------------------

    async def _merge(self, js: Any, lease: Lease, tails: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await lease.take():
                    self.terms += 1
                    await self._lead(js, lease, tails, stop)
            except _ERRORS as exc:
                log.warning("fleet merge: %s", exc)
            finally:
                self.holder = False
            await _pause(stop, lease.ttl / 4)

    async def _lead(self, js: Any, lease: Lease, tails: Any, stop: asyncio.Event) -> None:
        """Merge and write while the lease is held; return when it is lost."""
        s = self.schedule
        size = (max(s.multiples) + 1) * len(s.intervals)
        tail = resume_tail(last_lines(self.path, size), await _kept_tail(tails, self.tail_key))
        merger = self.merger = Merger(s, self.grace, tail)
        written = collections.deque(tail, maxlen=size)  # the fleet view's last lines
        unsure: list[str] = []  # handed to the output, not yet all written
        target = (await js.stream_info(STREAM)).state.last_seq
        caught = asyncio.Event()
        if target == 0:
            caught.set()

        async def take(msg: Any) -> None:
            meta = msg.metadata
            try:
                merger.add(decode(msg.data), meta.timestamp.timestamp())
            except ValueError as exc:
                self.bad_partials += 1
                log.error(
                    "ignoring a bad fleet partial (stream seq %d): %s", meta.sequence.stream, exc
                )
            if meta.sequence.stream >= target:
                caught.set()

        sub = await js.subscribe(
            f"{SUBJECT}.>",
            stream=STREAM,
            cb=take,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        reopened = self.reopens()
        output = self.output = Output(self.path)
        self.holder = True
        log.info("merging the fleet view into %s, after window %s", self.path, merger.next)
        renewed = time.monotonic()
        try:
            while not stop.is_set():
                if time.monotonic() - renewed >= lease.ttl / 4:
                    if not await lease.renew():
                        break
                    renewed = time.monotonic()
                if not lease.held():
                    break
                lines = merger.due(time.time()) if caught.is_set() else []
                if lines or output.pending:
                    if self.reopens() != reopened:  # logrotate renamed the file
                        reopened = self.reopens()
                        output.reopen()
                    output.write(lines)
                    unsure += lines
                    if not output.pending:
                        written.extend(json.loads(text) for text in unsure)
                        unsure.clear()
                        await self._record(tails, written)
                await _pause(stop, _POLL)
        finally:
            self.holder = False
            log.info("no longer merging the fleet view")
            output.close()
            try:
                await sub.unsubscribe()
            except _ERRORS as exc:
                log.debug("unsubscribing: %s", exc)

    async def _record(self, tails: Any, written: collections.deque[dict[str, Any]]) -> None:
        """Record the fleet view's last lines, all written: the next holder resumes after
        them should it find the file empty (rotated) or rotated since they began."""
        try:
            # Bounded: a slow put must not hold up the lease's renewal.
            put = tails.put(self.tail_key, jsonexact.dumps(list(written)))
            await asyncio.wait_for(put, self.cluster.lease_ttl / 4)
        except _ERRORS as exc:  # the file's own tail still serves the next holder
            if not self.tail_errors:
                log.warning("cannot record the fleet view's last lines: %s", exc)
            self.tail_errors += 1

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "cluster": self.conn.status(),
            "spooled": len(fleetspool.pending(self.spool)),
            "published": self.published,
            "publish_errors": self.publish_errors,
            "republished": self.republished,
            "bad_partials": self.bad_partials,
            "tail_errors": self.tail_errors,
            "holder": self.holder,
            "terms": self.terms,
            "merger": self.merger.status(time.time()) if self.merger is not None else None,
            "output": self.output.status() if self.output is not None else None,
        }


async def _kept_tail(tails: Any, key: str) -> list[dict[str, Any]]:
    """The last lines the holders recorded as written (none: nothing recorded within the
    stream's life; a row that is no line is passed over by :func:`.fleetmerge.resume_tail`)."""
    try:
        rows = jsonexact.loads((await tails.get(key)).value)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("not a list of lines")
    except NotFoundError:
        return []
    except ValueError as exc:
        log.error("ignoring the recorded fleet tail %s: %s", key, exc)
        return []
    return rows
