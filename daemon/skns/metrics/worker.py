"""The UDP worker: receive in batches, parse, aggregate, publish to shared memory.

The socket was bound by the supervisor before the fork (see :mod:`.sockets`),
so it outlives a crashed worker: datagrams keep queueing in the kernel while
the worker is restarted, and the new worker drains the same queue.

Each batch is stamped with one receive time and added to that time's window;
after the batch is published the watermark moves to that time. When the
socket is idle the watermark follows the clock, so the supervisor can close a
window as soon as every worker has passed its end.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import socket
import time
from typing import TYPE_CHECKING

import orjson

from ..ratelimit import RateGate
from .batch import aggregate
from .parse import check
from .partials import REASONS, Block
from .recvmmsg import BatchReceiver
from .window import INT64_MAX, INT64_MIN

if TYPE_CHECKING:
    from ..child import ChildContext

log = logging.getLogger("skns.metrics.worker")

# Longest poll: bounds how late the watermark (and a stop request) is seen.
_IDLE_POLL = 0.2
_LOG_EVERY = 10.0
_REASON_INDEX = {reason: i for i, reason in enumerate(REASONS)}
_TRUNCATED = _REASON_INDEX["truncated"]
# Sentinels for an empty window's max and min; published as zeros.
_NO_MAX = INT64_MIN - 1
_NO_MIN = INT64_MAX + 1
# A declined range of at most this many datagrams is checked one by one, not halved again.
_LEAF = 16
_loads = orjson.loads


class _RejectLog:
    """At most one log line per reason every ``_LOG_EVERY`` seconds, with the count since."""

    def __init__(self) -> None:
        self._gate = RateGate(_LOG_EVERY)

    def note(self, reason: str, data: bytes) -> None:
        held = self._gate.allow(reason)
        if held is not None:
            log.warning("rejected %d datagram(s): %s (latest: %r)", held + 1, reason, data[:80])


def fold(
    rx: BatchReceiver, start: int, stop: int, rejected: list[int], rejects: _RejectLog
) -> tuple[int, int, int, int]:
    """(count, A1 sum, A2 max, A3 min) of the good datagrams in ``rx``'s slots
    [start, stop), the bad ones counted in ``rejected`` by reason (max and min are
    sentinels when none is good).

    A range the fast path declines is halved and each half tried again, down to
    ``_LEAF`` datagrams: one bad datagram in a full batch sends a handful of
    datagrams through the exact one-by-one check, not the whole batch."""
    whole = aggregate(rx, start, stop)
    if whole is not None:
        return whole
    if stop - start > _LEAF:
        mid = (start + stop) // 2
        n1, s1, top1, bottom1 = fold(rx, start, mid, rejected, rejects)
        n2, s2, top2, bottom2 = fold(rx, mid, stop, rejected, rejects)
        return n1 + n2, s1 + s2, max(top1, top2), min(bottom1, bottom2)
    return _one_by_one(rx, start, stop, rejected, rejects)


def _one_by_one(
    rx: BatchReceiver, start: int, stop: int, rejected: list[int], rejects: _RejectLog
) -> tuple[int, int, int, int]:
    """The exact path: orjson first, the stdlib check (exact reasons) for what fails it."""
    count, total, top, bottom = 0, 0, _NO_MAX, _NO_MIN
    for i in range(start, stop):
        data = rx.datagram(i)
        if rx.truncated(i):
            rejected[_TRUNCATED] += 1
            rejects.note("truncated", data)
            continue
        try:
            obj = _loads(data)
            a1 = obj["A1"]
            a2 = obj["A2"]
            a3 = obj["A3"]
            ok = (
                type(a1) is int
                and type(a2) is int
                and type(a3) is int
                and INT64_MIN <= a1 <= INT64_MAX
                and INT64_MIN <= a2 <= INT64_MAX
                and INT64_MIN <= a3 <= INT64_MAX
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            verdict = check(data)
            if isinstance(verdict, str):
                rejected[_REASON_INDEX[verdict]] += 1
                rejects.note(verdict, data)
                continue
            a1, a2, a3 = verdict
        count += 1
        total += a1
        if a2 > top:
            top = a2
        if a3 < bottom:
            bottom = a3
    return count, total, top, bottom


def run(ctx: ChildContext, sock: socket.socket, block: Block) -> None:
    """The worker's main loop; returns on SIGTERM/SIGINT."""
    settings = ctx.settings.metrics
    stopping = False

    def on_stop(_signo: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

    rx = BatchReceiver(sock, settings.batch, settings.max_datagram)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    base = settings.window
    coalesce = settings.coalesce_ms / 1000
    rejects = _RejectLog()

    block.set_owner(os.getpid())
    # Continue from what this block holds: a restarted worker keeps its predecessor's figures.
    accepted, rejected = block.counters()
    cur_w = math.floor(time.time() / base)
    agg = block.read(cur_w)
    count, total = (agg.count, agg.a1_sum) if agg else (0, 0)
    top, bottom = (agg.a2_max, agg.a3_min) if agg and agg.count else (_NO_MAX, _NO_MIN)
    log.info("listening on fd %d (window %gs, batch %d)", sock.fileno(), base, rx.batch)
    ctx.ready()  # the socket was bound before the fork: datagrams are already queueing

    while not stopping:
        n = rx.recv()
        if not n:
            now = time.time()
            block.set_watermark(now)
            ctx.heartbeat()
            next_edge = (math.floor(now / base) + 1) * base
            poller.poll(max(1, math.ceil(min(next_edge - now, _IDLE_POLL) * 1000)))
            continue
        t = time.time()
        w = math.floor(t / base)
        if w != cur_w:
            cur_w, count, total, top, bottom = w, 0, 0, _NO_MAX, _NO_MIN
        before = count
        good, a1_sum, a2_max, a3_min = fold(rx, 0, n, rejected, rejects)
        count += good
        total += a1_sum
        if a2_max > top:
            top = a2_max
        if a3_min < bottom:
            bottom = a3_min
        rx.reset(n)
        block.publish(w, count, total, top if count else 0, bottom if count else 0)
        accepted += count - before
        block.set_counters(accepted, rejected)
        block.set_watermark(t)
        ctx.heartbeat()
        # A short batch means we are keeping pace with the senders: wait for a batch to
        # build up rather than paying the per-call costs for a handful of datagrams. Not
        # near a window's edge, where the wait would push datagrams into the next window.
        if n < rx.batch and coalesce and (w + 1) * base - time.time() > 2 * coalesce:
            time.sleep(coalesce)
    block.set_watermark(time.time())
    log.info("stopped")
