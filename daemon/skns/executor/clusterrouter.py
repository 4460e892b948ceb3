"""The router in cluster mode: the same WebSocket ingest, events published to JetStream.

Frames are parsed, refused and answered exactly as on one host (same order per
connection, same error frames). Each event goes to its partition's subject
(``skns.exec.<crc32(account) % partitions>``) with a message id: for an event
with an ``event_id``, a hash of its account and event id, so a resend to any host
within the stream's duplicate window (2 min) is stored once and acked with the
same ``seq``; otherwise a fresh unique id. A frame is acked once JetStream acked
each of its events, and the ack's ``seq`` is the stream sequence (the same after
any failover: the handler's idempotency key). An event JetStream did not ack
within ``publish_timeout`` gets its frame an error frame, never an ack.

The router also keeps this host in the roster of live hosts (a heartbeat key,
see :mod:`skns.executor.jetstream`; a second host with this name refuses to
start), and reads who holds this host's share of the partitions for
``/health`` and the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import orjson
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from .. import jsonexact
from ..cluster.connection import Connection
from ..cluster.lean import Lean, NotConnected
from ..config import Settings
from . import jetstream, layout
from .events import Incoming
from .placement import host_partitions, partition_of
from .publisher import WINDOW, Publish, Publisher
from .ring import Account, account_key
from .router import Answer, Client, Ingest

log = logging.getLogger("skns.executor.router")

_SETUP_RETRY = 1.0
STATUS_SHARE = 128


class FrameAnswer(Answer):
    """An answer owed for a frame whose events get their seqs from JetStream."""

    __slots__ = ("batch", "error", "seqs")

    def __init__(self, client: Client, count: int, batch: bool) -> None:
        super().__init__(client, count)
        self.batch = batch
        self.seqs = [0] * count
        self.error = ""


def message_id(account: Account, event_id: Any) -> str:
    """The JetStream message id of an event the client gave an ``event_id``."""
    data = account_key(account) + b"\0" + jsonexact.dumps(event_id)
    return "e" + hashlib.blake2b(data, digest_size=16).hexdigest()


class ClusterRouter(Ingest):
    def __init__(self, settings: Settings, shards: int, **kwargs: Any) -> None:
        super().__init__(settings, shards, **kwargs)
        self.cluster = settings.cluster
        self.config_path = settings.path
        self.conn = Connection(self.cluster, "executor-router", buffer=False)
        self.instance = jetstream.instance_id(settings.service.state_dir / "executor")
        self.lean = Lean(self.cluster, "executor-router")  # the publishes and their acks
        self.publisher = Publisher(self.lean, self._acked, self._failed)
        # Back-pressure sooner than on one host: events past the window would wait in the
        # publisher and spend their publish_timeout there.
        self.max_unacked = min(self.config.max_unacked, WINDOW)
        self.heartbeat: jetstream.Heartbeat | None = None
        self.buckets: jetstream.Buckets | None = None
        self.hosts: list[str] = []
        self.share: dict[int, str | None] = {}  # this host's partitions -> lease holder
        self._partition: dict[Account, str] = {}  # account -> subject, remembered

    # -- publishing -------------------------------------------------------------------------

    def _subject(self, account: Account) -> str:
        subject = self._partition.get(account)
        if subject is None:
            if len(self._partition) >= 1 << 20:
                self._partition.clear()
            subject = jetstream.subject(partition_of(account, self.cluster.partitions))
            self._partition[account] = subject
        return subject

    def _dispatch(self, client: Client, events: list[Incoming], batch: bool) -> None:
        answer = FrameAnswer(client, len(events), batch)
        publisher = self.publisher
        for index, (account, event_id, payload) in enumerate(events):
            msg_id = publisher.fresh_id() if event_id is None else message_id(account, event_id)
            data = jsonexact.dumps([account, event_id, payload])
            publisher.add(Publish(answer, index, self._subject(account), data, msg_id))
        client.owe(answer)

    def _settle(self, answer: FrameAnswer) -> None:
        self.unacked -= 1
        if self.unacked < self.max_unacked:
            self.room.set()
        answer.remaining -= 1
        if answer.remaining:
            return
        if answer.error:
            answer.body = orjson.dumps({"error": answer.error})
        elif answer.batch:
            answer.body = orjson.dumps({"ack": answer.seqs})
        else:
            answer.body = b'{"ack":%d}' % answer.seqs[0]
        answer.client.ready.set()

    def _acked(self, publish: Publish, seq: int) -> None:
        self.accepted += 1
        publish.answer.seqs[publish.index] = seq
        self._settle(publish.answer)

    def _failed(self, publish: Publish, reason: str, refused: bool) -> None:
        answer = publish.answer
        if refused and not answer.error:
            self.rejected["event too large for the cluster"] += 1
            answer.error = f"event {publish.index} of this frame is {reason}: not stored"
        elif not answer.error:
            self.rejected["not stored by the cluster"] += 1
            answer.error = (
                f"the cluster did not confirm event {publish.index} of this frame within "
                f"{self.cluster.publish_timeout:g} s ({reason}); it may still have been stored "
                "and run: send the frame again with the same event_id values to have it once"
            )
        self._settle(answer)

    # -- the host in the cluster -------------------------------------------------------------

    async def _start(self, stop: asyncio.Event) -> list[asyncio.Task[None]] | None:
        """Connect, set up the stream and buckets, join the roster; raises DuplicateHost, and
        LayoutMismatch when this host's configuration is not the one the cluster was made with."""
        if not await self.conn.open(stop) or not await self.lean.open(stop):
            return None
        while not stop.is_set():
            try:
                self.buckets = await jetstream.set_up(self.conn, self.cluster, create=True)
                await layout.agree(
                    self.conn.admin, self.buckets, self.cluster, self.config_path, create=True
                )
                heartbeat = jetstream.Heartbeat(
                    self.buckets.hosts, self.conn, self.cluster.host_name, self.instance
                )
                await heartbeat.join()
                self.heartbeat = heartbeat
                break
            except (APIError, NatsError, TimeoutError) as exc:
                log.warning("cannot set up the executor's stream and buckets yet: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _SETUP_RETRY)
        if stop.is_set():
            return None
        tasks = self.publisher.start()
        return [*tasks, asyncio.create_task(self._beat()), asyncio.create_task(self._follow())]

    async def _beat(self) -> None:
        """Renew the heartbeat, on its own (twice as often as needed: a renewal may be slow)."""
        assert self.heartbeat is not None
        while True:
            await self.heartbeat.beat()
            await asyncio.sleep(self.cluster.lease_ttl / 6)

    async def _follow(self) -> None:
        """Follow the live hosts and who holds this host's share."""
        assert self.buckets is not None
        name = self.cluster.host_name
        while True:
            try:
                quick = self.cluster.lease_ttl / 2
                self.hosts = await jetstream.live_hosts(self.lean, quick)
                mine = host_partitions(self.cluster.partitions, self.hosts, name)
                holders = await asyncio.gather(
                    *(jetstream.owner_of(self.lean, p, quick) for p in mine)
                )
                self.share = dict(zip(mine, holders, strict=True))
            except (APIError, NatsError, TimeoutError, NotConnected) as exc:
                log.debug("cannot read the roster: %s", exc)
            await asyncio.sleep(self.cluster.lease_ttl / 3)

    async def _finish(self) -> None:
        if self.heartbeat is not None:
            await self.heartbeat.leave()
        await self.lean.close()
        await self.conn.close()

    def _in_transit(self) -> bool:
        return self.lean.connected and self.publisher.in_flight > 0

    def _describe(self) -> str:
        return f"cluster mode as {self.cluster.host_name}, {self.cluster.partitions} partitions"

    def _running_share(self) -> tuple[int, int]:
        """(partitions of this host's share held by this host, share size)."""
        name = self.cluster.host_name
        held = sum(jetstream.holder_host(h) == name for h in self.share.values())
        return held, len(self.share)

    def _health_doc(self) -> tuple[bool, dict[str, Any]]:
        held, share = self._running_share()
        if not (self.conn.connected and self.lean.connected):
            why = "not connected to NATS"
        elif self.heartbeat is None or self.cluster.host_name not in self.hosts:
            why = "not in the roster of live hosts yet"
        elif held < share:
            why = f"runs {held} of its {share} partitions"
        else:
            why = ""
        doc = {"host": self.cluster.host_name, "partitions": share, "partitions_running": held}
        return not why, {**doc, **({"reason": why} if why else {})}

    def stats(self) -> dict[str, Any]:
        held, _ = self._running_share()
        return {
            **super().stats(),
            "cluster": self.conn.status(),
            "lean": self.lean.status(),
            "hosts": self.hosts,
            # This host's share and who runs each (host/shard/pid), for a status under 16 KiB
            # the first STATUS_SHARE of them.
            "partitions": {str(p): h for p, h in sorted(self.share.items())[:STATUS_SHARE]},
            "partitions_share": len(self.share),
            "partitions_running": held,
            "publish_in_flight": self.publisher.in_flight,
            "publish_retries": self.publisher.retries,
            "publish_errors": self.publisher.errors,
            "heartbeat_failures": self.heartbeat.failures if self.heartbeat else 0,
        }
