"""The reorder buffer: ids in any order in, contiguous runs in id order out.

Pure logic: no I/O and no clock. Callers pass ``now`` (any monotonic unit, the
same one as ``gap_timeout`` and ``settle``) to the calls that may start or end a
wait, and ask :attr:`ReorderBuffer.deadline` when to call :meth:`expire`.

Held items live in a dict keyed by id; a min-heap of the same ids finds the
oldest gap when one must be skipped. A run pops its ids off the heap top (they
are the lowest), so every held id is pushed and popped once: O(log n) per
buffered message, O(1) per message that arrives in order with nothing held
(the common case, which touches neither structure).

A run is released the moment it completes: the push that fills the first gap
returns that id and every held id contiguous with it.

Gaps. When the next expected id is missing and later ids are held, the gap
starts a clock; after ``gap_timeout`` (0: never) :meth:`expire` skips to the
lowest held id. A new gap starts its own clock when it becomes the first one.
The buffer never holds more than ``limit`` items, nor items of more than
``limit_bytes`` (each item's ``size(item)``; counted only for held items, so the
in-order path never pays for it): the push that would exceed either skips the
oldest gap at once, and the next ones until it fits again. Each such skip is
also counted in :attr:`overflows`. Holding more instead would have no end:
waiting for the missing id with the source unread could wait forever, since
that id may be behind in the same stream.

Learning the first id. With ``first_id=None`` the buffer holds everything for
``settle`` after the first push, then starts from the lowest id seen, unless
that id is a stray: the relay would then wait forever (with no gap timeout) for
the ids between it and the real stream. A held id is an *outlier* when it has
no held neighbour (neither id - 1 nor id + 1) and lies below the run the others
form: the next :data:`OUTLIER_RUN` held ids above it each have a neighbour.
Outliers found when settling get one more ``settle`` to be joined by their
neighbours (a real first id whose successors are late is joined); those still
alone are dropped and counted in :attr:`outliers`, and the stream starts above
them. With fewer ids than that (a trickle) there is no run to judge by, and
the lowest id starts the stream as before.

An id that arrives below the start once it is known (a first id later than
``settle``, a stray after the start, or below a configured ``first_id``) is
dropped as :data:`BELOW_START`, apart from ids below what was already sent.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# What push() did with an id besides holding or releasing it.
DUPLICATE = "duplicate"  # the id is already held
BELOW_SENT = "below_sent"  # the id is below the next expected one: sent, or skipped
BELOW_START = "below_start"  # the id is below the first id (configured or learned)

# Held ids, each with a held neighbour, that make the run an outlier lies below.
OUTLIER_RUN = 8


class ReorderBuffer(Generic[T]):
    """Holds items by integer id and releases them in strictly increasing id order."""

    __slots__ = (
        "_confirming",
        "_gap_since",
        "_heap",
        "_held",
        "_settle_until",
        "below_sent",
        "below_start",
        "duplicates",
        "gap_timeout",
        "held_bytes",
        "learned",
        "limit",
        "limit_bytes",
        "lowest_below_start",
        "next_id",
        "outliers",
        "overflows",
        "released",
        "settle",
        "size",
        "skipped",
        "skips",
        "start",
    )

    def __init__(
        self,
        first_id: int | None = None,
        *,
        gap_timeout: float = 0,
        limit: int = 1_000_000,
        limit_bytes: int | None = None,
        size: Callable[[T], int] = lambda item: 0,
        settle: float = 0,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if limit_bytes is not None and limit_bytes < 1:
            raise ValueError("limit_bytes must be >= 1")
        # The id the next release starts with; None until learned.
        self.next_id: int | None = first_id
        self.start = first_id  # the first id released: configured, or learned
        self.learned = first_id is None
        self.gap_timeout = gap_timeout
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.size = size
        self.held_bytes = 0  # size of the items held
        self.settle = settle
        self._held: dict[int, T] = {}
        self._heap: list[int] = []
        self._gap_since: float | None = None  # when the current first gap began holding
        self._settle_until: float | None = None
        self._confirming = False  # settled once; outliers get one more settle to be joined
        self.released = 0  # items handed out
        self.duplicates = 0  # pushes dropped: id already held
        self.below_sent = 0  # pushes dropped: id below next_id, at or above start
        self.below_start = 0  # pushes dropped: id below start
        self.lowest_below_start: int | None = None
        self.outliers = 0  # ids dropped when settling: strays below the run (see above)
        self.skipped = 0  # ids given up on (gap timeout or limit)
        self.skips = 0  # times a gap was skipped
        self.overflows = 0  # of those, because the buffer was full (limit or limit_bytes)

    def __len__(self) -> int:
        """Items held now."""
        return len(self._held)

    @property
    def deadline(self) -> float | None:
        """When :meth:`expire` has work to do (settle end or gap timeout), or None."""
        if self.next_id is None:
            return self._settle_until
        if self._gap_since is not None and self.gap_timeout > 0:
            return self._gap_since + self.gap_timeout
        return None

    def push(self, id_: int, item: T, now: float) -> list[T] | str:
        """Take one item; return the run it completes (often ``[]``), or why it was dropped.

        The drop reasons are :data:`DUPLICATE` and :data:`BELOW_SENT`; they are
        also counted in :attr:`duplicates` and :attr:`below_sent`.
        """
        next_id = self.next_id
        held = self._held
        if id_ == next_id:
            if not held:  # the fast path: in order, nothing waiting
                self.next_id = id_ + 1
                self.released += 1
                return [item]
            run = [item]
            self._release_from(id_ + 1, run, now)
            return run
        if next_id is not None and id_ < next_id:
            if id_ < self.start:  # type: ignore[operator]  # start is known with next_id
                self.below_start += 1
                lowest = self.lowest_below_start
                if lowest is None or id_ < lowest:
                    self.lowest_below_start = id_
                return BELOW_START
            self.below_sent += 1
            return BELOW_SENT
        if id_ in held:
            self.duplicates += 1
            return DUPLICATE
        held[id_] = item
        heapq.heappush(self._heap, id_)
        self.held_bytes += self.size(item)
        full = len(held) > self.limit or (
            self.limit_bytes is not None and self.held_bytes > self.limit_bytes
        )
        if next_id is None:
            if self._settle_until is None:
                self._settle_until = now + self.settle
            if full:  # no time to settle: start from what we have
                return self._overflow(self._start(now), now)
            return []
        if self._gap_since is None:
            self._gap_since = now
        if full:
            self.overflows += 1
            return self._overflow(self._skip_gap(now), now)
        return []

    def _overflow(self, run: list[T], now: float) -> list[T]:
        """Skip gaps until what is held fits ``limit_bytes`` again; ``run`` is released."""
        limit_bytes = self.limit_bytes
        while limit_bytes is not None and self.held_bytes > limit_bytes:
            self.overflows += 1
            run.extend(self._skip_gap(now))
        return run

    def expire(self, now: float) -> list[T]:
        """Settle or skip the first gap if its time has come; return what that releases."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        if self.next_id is None:
            return self._settled(now)
        return self._skip_gap(now)

    def drain(self) -> list[T]:
        """Skip every gap and release everything held, in order (the end of a stream)."""
        run: list[T] = []
        if self.next_id is None and self._held:
            run.extend(self._start(0))
        while self._held:
            run.extend(self._skip_gap(0))
        return run

    def _settled(self, now: float) -> list[T]:
        """The settle time is over: start, after dropping outliers still alone."""
        outliers = self._outliers()
        if outliers and not self._confirming:
            self._confirming = True  # one more settle for their neighbours to come
            self._settle_until = now + self.settle
            return []
        heap = self._heap
        for _ in outliers:  # they are the lowest held ids
            self.held_bytes -= self.size(self._held.pop(heapq.heappop(heap)))
        self.outliers += len(outliers)
        return self._start(now)

    def _outliers(self) -> list[int]:
        """The held ids, lowest first, with no held neighbour below the run the others form."""
        held = self._held
        lowest = heapq.nsmallest(2 * OUTLIER_RUN, self._heap)
        # Ascending, an id has no lower neighbour unless the one before it has an upper one.
        alone = 0
        while alone < len(lowest) and lowest[alone] + 1 not in held:
            alone += 1
        run = lowest[alone : alone + OUTLIER_RUN]
        if not alone or alone >= OUTLIER_RUN or len(run) < OUTLIER_RUN:
            return []  # no stray, too many to call strays, or too few ids to judge by
        for id_ in run:
            if id_ - 1 not in held and id_ + 1 not in held:
                return []  # the others are no run either: nothing to judge by
        return lowest[:alone]

    def _start(self, now: float) -> list[T]:
        self._settle_until = None
        first = self._heap[0]
        self.start = first
        run: list[T] = [self._take(first)]
        self._release_from(first + 1, run, now)
        return run

    def _skip_gap(self, now: float) -> list[T]:
        assert self.next_id is not None
        lowest = self._heap[0]
        self.skipped += lowest - self.next_id
        self.skips += 1
        run: list[T] = [self._take(lowest)]
        self._release_from(lowest + 1, run, now)
        return run

    def _take(self, id_: int) -> T:
        item = self._held.pop(id_)
        self.held_bytes -= self.size(item)
        return item

    def _release_from(self, id_: int, run: list[T], now: float) -> None:
        """Append the held run starting at ``id_`` to ``run``; ``run`` already holds its head."""
        held = self._held
        take = self._take
        while id_ in held:
            run.append(take(id_))
            id_ += 1
        self.next_id = id_
        self.released += len(run)
        if held:
            heap = self._heap
            while heap[0] < id_:  # released ids are the lowest in the heap
                heapq.heappop(heap)
            self._gap_since = now  # a new first gap starts waiting now
        else:
            self._gap_since = None
            self._heap.clear()
