"""Cluster mode: the router's publishes to JetStream, many in flight, each retried.

Every event is published with a reply subject of its own under one inbox this
process subscribes to (one subscription for all, as nats-py's ``publish_async``
does, but with the retries under our control), on the lean connection
(:mod:`skns.cluster.lean`, not nats-py: its per-publish and per-answer CPU was most
of the router's): the JetStream publish ack that comes back there carries the
event's stream sequence. A try not answered within ``publish_timeout / TRIES`` s,
or answered with an error (no stream leader during an election: no responders), or
not sendable (disconnected), is tried again with the same message id, so JetStream
stores the event once however many tries reached it; once ``publish_timeout`` has
passed the publish fails. When the connection drops, every try in flight is tried
again shortly (its answer may have been lost with the connection).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from ..cluster import wire
from ..cluster.lean import Lean, NotConnected

log = logging.getLogger("skns.executor.router")

TRIES = 2  # tries within publish_timeout when a try gets no answer (a third only added load)
# Most events sent and not answered yet; the others wait (their publish_timeout counts from
# their first send): a burst of tens of thousands at once on a loaded cluster only times
# out, and the retries add to the load.
WINDOW = 1024
ERROR_PAUSE = 0.1  # seconds before trying again after an error answer or a send failure
SWEEP = 0.02  # seconds between looks at the tries that are due
HEADROOM = 1024  # bytes of a message kept for its subject, reply subject and headers


class Publish:
    """One event on its way to the stream."""

    __slots__ = ("answer", "data", "deadline", "index", "message", "msg_id", "subject", "token",
                 "tries")  # fmt: skip

    def __init__(self, answer: Any, index: int, subject: str, data: bytes, msg_id: str) -> None:
        self.answer = answer  # what its client frame is owed
        self.index = index  # its place in the frame
        self.subject = subject
        self.data = data
        self.msg_id = msg_id
        self.deadline = 0.0  # set at the first send
        self.token = ""  # of its reply subject
        self.message = b""  # the HPUB, built once its reply subject is known; every try sends it
        self.tries = 0


class Publisher:
    def __init__(
        self,
        lean: Lean,
        acked: Callable[[Publish, int], None],
        failed: Callable[[Publish, str, bool], None],
    ) -> None:
        self.lean = lean
        self.timeout = lean.settings.publish_timeout
        self._acked = acked
        self._failed = failed
        self.prefix = ""
        self.waiting: dict[str, Publish] = {}  # reply token -> publish not answered yet
        self._tokens = itertools.count()
        # When to look at a try again. A first try is due publish_timeout / TRIES after it
        # is sent, so first tries fall due in the order they were sent: a queue of (when,
        # the publishes first sent then: a loop turn's), no heap push and pop per event.
        # The others: a heap of (when, n, try, publish).
        self._first: deque[tuple[float, list[Publish]]] = deque()
        self._due: list[tuple[float, int, int, Publish]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None  # (asyncio's lookup is a syscall)
        self.last_error = ""
        self.retries = 0
        self.errors = 0
        # Message ids of events without a client event id: unique across restarts.
        self._ids = f"r{uuid.uuid4().hex[:16]}."
        self._id_count = itertools.count()

    def fresh_id(self) -> str:
        return self._ids + str(next(self._id_count))

    def start(self) -> list[asyncio.Task[None]]:
        self._loop = asyncio.get_running_loop()
        self.prefix = f"_INBOX.{uuid.uuid4().hex}."
        self.lean.subscribe(self.prefix + "*", self._answer)
        self.lean.on_lost.append(self._lost)
        return [asyncio.create_task(self._sweep_loop())]

    def add(self, publish: Publish) -> None:
        publish.token = token = str(next(self._tokens))
        headers = wire.msg_id_headers(publish.msg_id)
        publish.message = wire.hpub(publish.subject, self.prefix + token, headers, publish.data)
        self.waiting[token] = publish
        self._send(publish)

    def _again(self, publish: Publish, now: float, delay: float) -> None:
        """Look at ``publish`` again ``delay`` s after ``now`` (resend or give up)."""
        heapq.heappush(self._due, (now + delay, next(self._order), publish.tries, publish))

    def _send(self, publish: Publish) -> None:
        lean = self.lean
        assert self._loop is not None
        now = self._loop.time()
        first = not publish.tries
        if first:
            publish.deadline = now + self.timeout
        publish.tries += 1
        # The server counts headers too, and closes the connection of a client that
        # sends past its max_payload: refused here, never sent.
        if len(publish.data) + HEADROOM > lean.max_payload:
            self._fail(publish, f"larger than the cluster's {lean.max_payload} bytes", True)
            return
        try:
            lean.send(publish.message)
        except NotConnected as exc:  # try again shortly
            self.last_error = f"not sent: {exc}"
            self._again(publish, now, ERROR_PAUSE)
            return
        if first:
            when = now + self.timeout / TRIES
            queue = self._first
            if queue and queue[-1][0] == when:
                queue[-1][1].append(publish)
            else:
                queue.append((when, [publish]))
        else:  # the last try gets what is left of publish_timeout
            self._again(publish, now, max(min(self.timeout / TRIES, publish.deadline - now), 0.0))

    def _lost(self) -> None:
        """The connection dropped: the answers of the tries in flight may be lost with it."""
        self.last_error = "connection to NATS lost"
        assert self._loop is not None
        now = self._loop.time()
        for publish in self.waiting.values():
            self._again(publish, now, ERROR_PAUSE)

    def _next_due(self, now: float) -> tuple[int, list[Publish]]:
        """The earliest tries due at ``now``, taken off their queue: (the try they were,
        their publishes); (0, []) if none is."""
        first, due = self._first, self._due
        if first and first[0][0] <= now and (not due or first[0][0] <= due[0][0]):
            return 1, first.popleft()[1]
        if due and due[0][0] <= now:
            _, _, tries, publish = heapq.heappop(due)
            return tries, [publish]
        return 0, []

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        waiting = self.waiting
        while True:
            await asyncio.sleep(SWEEP)
            now = loop.time()
            while True:
                tries, publishes = self._next_due(now)
                if not publishes:
                    break
                for publish in publishes:
                    if publish.token not in waiting or tries != publish.tries:
                        continue  # answered, or tried again since
                    if now >= publish.deadline:
                        del waiting[publish.token]
                        self._fail(publish, self.last_error or "no answer")
                        continue
                    self.retries += 1
                    self._send(publish)

    def _fail(self, publish: Publish, reason: str, refused: bool = False) -> None:
        """Give up on ``publish``; ``refused``: it was never sent (certainly not stored)."""
        self.errors += 1
        self.waiting.pop(publish.token, None)
        self._failed(publish, reason, refused)

    def _answer(self, subject: str, reply: str, status: str, data: bytes) -> None:
        token = subject[len(self.prefix) :]
        publish = self.waiting.get(token)
        if publish is None:
            return  # a late answer to a try already answered (or given up)
        if status == "503":
            self.last_error = "no JetStream responders (stream without a leader?)"
            self._error_answer(publish)
            return
        seq = _sequence(data)
        if seq is None:
            self.last_error = f"JetStream answered {status} {data[:200]!r}"
            self._error_answer(publish)
            return
        del self.waiting[token]
        self._acked(publish, seq)

    def _error_answer(self, publish: Publish) -> None:
        assert self._loop is not None
        self._again(publish, self._loop.time(), ERROR_PAUSE)

    @property
    def in_flight(self) -> int:
        return len(self.waiting)


def _sequence(data: bytes) -> int | None:
    """The stream sequence of a publish ack; None for an error answer."""
    try:
        seq = orjson.loads(data)["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return seq if type(seq) is int else None
