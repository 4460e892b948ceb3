"""Cluster mode: a partition's reader, an ephemeral pull consumer kept fed by one open request.

nats-py's ``fetch()`` waits for every message with a timer of its own and parses every
message's reply subject into dataclasses; the owner asked for the first event, then for
those pending, two requests per burst. With tens of partitions a shard, each getting a few
events per wakeup, that was a third of a shard's CPU per event (py-spy, ``skns-ctl bench
cluster --only executor``). Here the deliveries come to a callback of one plain
subscription per consumer, and one pull request at a time stays open (``batch`` events or
``expires`` s): the server sends each event as soon as it is stored, so a busy partition
costs a request per ``batch`` events or per ``expires`` s, and an idle one a request per
``expires`` s, with the server's heartbeat every second while it has nothing to send. The
server's answer at expiry (status 408) shows the consumer is alive; a request ended by the
server (status 409: the consumer was deleted, its leader changed) or silent for two
heartbeats (the consumer's node died) tells the caller to make the consumer again.
Requests and deliveries go over the lean connection (:mod:`skns.cluster.lean`: a delivery
parsed and taken in the loop iteration that read it, not a ``Msg``, a queue and a task
each as in nats-py); when it drops, the caller drops its readers (:meth:`Reader.drop`)
and makes its consumers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import orjson
from nats.js import api
from nats.js.errors import APIError

from ..cluster.lean import Lean
from ..cluster.leankv import api_answer

ANSWER_GRACE = 1.0  # seconds past a request's expiry before it counts as unanswered
# Seconds between the server's heartbeats while a request waits with nothing to deliver (at
# most a quarter of its expiry; nats-server refuses one past half of it). Nothing heard for
# two of them and the grace: the request counts as unanswered (the consumer's node died).
HEARTBEAT = 1.0


def delivery(reply: str) -> tuple[int, int, int] | None:
    """(stream sequence, consumer sequence, events pending) of a JetStream delivery's reply
    subject, ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (or the
    form with a domain and an account hash after ``ACK``); None if it is not one."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    base = 5 if len(tokens) == 9 else 7
    try:
        return int(tokens[base]), int(tokens[base + 1]), int(tokens[base + 3])
    except (ValueError, IndexError):
        return None


async def make_consumer(lean: Lean, stream: str, config: api.ConsumerConfig, timeout: float) -> str:
    """Make an ephemeral consumer over the lean connection; its name.

    Over the connection its pull requests will use, not nats-py's: a request sent through
    another server than the one that asked for the consumer can get there before the
    consumer's interest does and be dropped without an answer (5 of 100 first pulls on a
    3-node cluster), which left a partition taken over after a host's death idle until the
    request expired (failover 3.5 -> 9 s in ``skns-ctl bench cluster``)."""
    request = orjson.dumps({"stream_name": stream, "config": config.as_dict()})
    status, data = await lean.request(f"$JS.API.CONSUMER.CREATE.{stream}", request, b"", timeout)
    name = api_answer(status, data).get("name")
    if not isinstance(name, str) or not name:
        raise APIError(description=f"not a consumer: {data[:200]!r}")
    return name


class Reader:
    """Deliveries of one consumer to ``take(stream_seq, data, pending)``, in order.

    A delivery out of order (one lost in transit: a reconnect) marks the reader ``lost``
    and nothing more is taken from this consumer: the caller makes a new one from the
    last sequence it took.
    """

    def __init__(
        self, lean: Lean, stream: str, consumer: str, take: Callable[[int, bytes, int], None]
    ) -> None:
        self.loop = asyncio.get_running_loop()  # kept: asyncio's lookup is a syscall (getpid)
        self.lean = lean
        self.stream = stream
        self.consumer = consumer
        self.next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.take = take
        self.inbox = f"_INBOX.{uuid.uuid4().hex}"
        self.sid = 0
        self.delivered = 0  # consumer sequence of the last delivery taken
        self.asked = 0  # deliveries the open request may still bring
        self.answered = False  # the server ended the open request (events or a status)
        self.heard = 0.0  # loop time the server last sent anything for it (a heartbeat too)
        self.lost = False
        self.why = ""  # why it was lost, for the log and the status
        self._ended = asyncio.Event()

    def open(self) -> None:
        self.sid = self.lean.subscribe(self.inbox, self._deliver)

    def close(self) -> None:
        self.drop()
        self.lean.unsubscribe(self.sid)

    def drop(self) -> None:
        """Take nothing more (the connection dropped: deliveries may be lost)."""
        self.lose("connection lost")

    def lose(self, why: str) -> None:
        """Take nothing more from this consumer, because ``why``."""
        if not self.lost:
            self.lost, self.why = True, why
        self._ended.set()

    async def pull(self, batch: int, expires: float) -> bool:
        """One request for up to ``batch`` events, open up to ``expires`` s; False if the
        server did not end it, or fell silent for two heartbeats (its consumer may be gone:
        known in about 3 s, not at the request's expiry). Raises
        :class:`~skns.cluster.lean.NotConnected`."""
        loop = self.loop
        beat = min(HEARTBEAT, expires / 4)
        self.asked = batch
        self.answered = False
        self._ended.clear()
        request = orjson.dumps(
            {"batch": batch, "expires": int(expires * 1e9), "idle_heartbeat": int(beat * 1e9)}
        )
        self.lean.publish(self.next, request, self.inbox)
        self.heard = loop.time()
        end = self.heard + expires + ANSWER_GRACE
        while not self._ended.is_set():
            left = min(end, self.heard + 2 * beat + ANSWER_GRACE) - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), left)
        return self.answered

    def _deliver(self, subject: str, reply: str, status: str, data: bytes) -> None:
        if self.lost:
            return
        self.heard = self.loop.time()
        if status == "100":  # a heartbeat: the consumer is there, the request still open
            return
        self.answered = True
        if status:
            # 409: the server ended the request and the consumer cannot be trusted with the
            # next (deleted, its leader changed, too many requests): made again at once. A
            # pull sent to a deleted consumer gets no answer at all, and the partition waited
            # for its expiry and a look at the consumer (6 s) before making it again.
            # 408: the request expired; 404: no events.
            if status == "409":
                self.lose("pull ended by the server (409)")
            else:
                self._ended.set()
            return
        where = delivery(reply)
        if where is None:
            return
        seq, cseq, pending = where
        if cseq != self.delivered + 1:
            self.lose(f"delivery gap (consumer sequence {cseq} after {self.delivered})")
            return
        self.delivered = cseq
        self.take(seq, data, pending)
        self.asked -= 1
        if self.asked <= 0:
            self._ended.set()
