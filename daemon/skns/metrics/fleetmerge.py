"""The fleet view's merge: hosts' base-window partials into fleet lines. Pure logic, no I/O.

Every host publishes each base window it closed (its ``metrics.jsonl`` base line)
as a *partial*. The :class:`Merger` of the lease holder collects them per window
and writes window ``w`` once every live host has passed its end (published ``w``
or a later window), or once ``grace`` seconds have gone by since its end (a host
that went silent). Lines are those of ``metrics.jsonl`` plus ``hosts``: the
number of hosts merged; a longer interval shows the fewest hosts any of its base
windows held, so ``hosts`` below the fleet's size marks an incomplete interval.

A partial for a window already written is never merged: it is counted as late
(or as a duplicate when that host's partial was already in the line).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import jsonexact
from .closer import Closer
from .window import Aggregate, Schedule, end_of, label, place, timestamp

# Written windows remembered to tell a late partial from a duplicate.
_REMEMBERED = 4096
_DELAYS = 1000


@dataclasses.dataclass
class FleetAggregate(Aggregate):
    """An aggregate over hosts; merged over windows, ``hosts`` is the fewest."""

    hosts: int | None = None

    def merge(self, other: Aggregate) -> None:
        hosts = getattr(other, "hosts", None)
        if hosts is not None:
            self.hosts = hosts if self.hosts is None else min(self.hosts, hosts)
        super().merge(other)

    def extra(self) -> dict[str, int]:
        return {"hosts": self.hosts or 0}


@dataclasses.dataclass(frozen=True)
class Partial:
    host: str
    end: float  # the window's end, as in its line's timestamp
    agg: Aggregate


def msg_id(host: str, end: float) -> str:
    """The JetStream message id: a republish of the same window is stored once."""
    return f"{host}@{timestamp(end)}"


def encode(host: str, row: dict[str, Any]) -> bytes:
    """The message for a host's base line ``row`` (A1_sum exact past 64 bits)."""
    return jsonexact.dumps(
        {
            "host": host,
            "end": row["timestamp"],
            "count": row["count"],
            "A1_sum": row["A1_sum"],
            "A2_max": row["A2_max"],
            "A3_min": row["A3_min"],
        }
    )


def decode(data: bytes) -> Partial:
    """A partial from a message; ValueError saying what is wrong."""
    doc = jsonexact.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    host, end = doc.get("host"), doc.get("end")
    if not isinstance(host, str) or not host:
        raise ValueError("no host")
    if not isinstance(end, int | float) or isinstance(end, bool):
        raise ValueError("no window end")
    values = [doc.get(k) for k in ("count", "A1_sum", "A2_max", "A3_min")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError("count, A1_sum, A2_max and A3_min must be integers")
    if values[0] < 0:
        raise ValueError("negative count")
    return Partial(host, float(end), Aggregate(*values))


def tail_key(path: Path, window: float, intervals: Sequence[float]) -> str:
    """The key of the record of ``fleet_output``'s last lines: one per path and windows, so
    a fleet view moved to another file or other intervals starts afresh."""
    what = f"{path}|{float(window)}|{sorted(float(x) for x in intervals)}".encode()
    return f"tail.{hashlib.sha256(what).hexdigest()[:32]}"


def resume_tail(on_file: list[dict[str, Any]], kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines a new holder resumes after: ``on_file``, the fleet output's last lines, or
    ``kept``, the last lines the holders recorded as written, when the file is empty (it
    was rotated: they are in the renamed file) or ends with the same line (the record also
    holds the longer intervals' base lines a file rotated since lacks). A file that ends
    with another line keeps its own: a line written after the record (a holder killed
    before it recorded), or a file a host keeps on its own disk, filled in from its end."""
    on_file, kept = [r for r in on_file if is_line(r)], [r for r in kept if is_line(r)]
    if kept and (not on_file or on_file[-1] == kept[-1]):
        return kept
    return on_file


def is_line(row: dict[str, Any]) -> bool:
    """Does ``row`` read as a fleet line (one a holder can resume after)? Anything else in
    the file's tail or the record (written by hand, or damaged) is passed over."""
    end, kind = row.get("timestamp"), row.get("count_type")
    figures = [row.get(k) for k in ("count", "A1_sum", "A2_max", "A3_min", "hosts")]
    if type(end) not in (int, float) or not math.isfinite(end) or not isinstance(kind, str):
        return False
    try:
        seconds = float(kind.removesuffix("s"))
    except ValueError:
        return False
    return kind.endswith("s") and math.isfinite(seconds) and all(type(v) is int for v in figures)


class Merger:
    """Collects partials and returns the fleet lines that are due, in window order."""

    def __init__(self, schedule: Schedule, grace: float, tail: list[dict[str, Any]]) -> None:
        self.schedule = schedule
        self.base = schedule.base
        self.grace = grace
        self.closer: Closer | None = self._resume(tail)
        # Windows below this were written before this merger (by it in an earlier run, or
        # by the previous lease holder), or come before a fresh output's first window:
        # partials for them are history, skipped quietly.
        self.history = self.closer.next if self.closer is not None else None
        self.open: dict[int, dict[str, Aggregate]] = {}
        self.heard: dict[str, tuple[int, float]] = {}  # host -> (highest window, when)
        self.written: collections.OrderedDict[int, frozenset[str]] = collections.OrderedDict()
        self.late = 0
        self.duplicates = 0
        self.misaligned = 0
        self.delays: collections.deque[float] = collections.deque(maxlen=_DELAYS)

    def _resume(self, tail: list[dict[str, Any]]) -> Closer | None:
        """A closer continuing after the last window of ``tail`` (the fleet output's last
        lines), with the longer intervals' totals rebuilt from the base lines in it."""
        s = self.schedule
        base_label = label(s.intervals[0])
        rows = {}
        for row in tail:
            if row.get("count_type") == base_label:
                w = self._window(float(row["timestamp"]))
                if w is not None:
                    rows[w] = row
        if not rows:
            return None
        closer = Closer(s, max(rows) + 1)
        last = closer.next - 1
        # Written: every line up to the file's last one in output order. A longer interval
        # that ended with the last base window may not be (a full disk cut the write after
        # the base line): it stays open, and the next close writes it first.
        written = place(tail[-1])
        for seconds, k in zip(s.intervals[1:], s.multiples[1:], strict=True):
            index = last // k
            first = index * k
            if closer.next == first + k and (timestamp(end_of(last, s.base)), seconds) <= written:
                continue
            totals = FleetAggregate()
            for w in range(first, closer.next):
                if w in rows:
                    r = rows[w]
                    values = (r["count"], r["A1_sum"], r["A2_max"], r["A3_min"])
                    totals.merge(FleetAggregate(*(int(v) for v in values), int(r["hosts"])))
            closer.open[k] = (index, totals)
        return closer

    def _window(self, end: float) -> int | None:
        w = round(end / self.base) - 1
        return w if abs(end_of(w, self.base) - end) < 1e-6 else None

    @property
    def next(self) -> int | None:
        return self.closer.next if self.closer is not None else None

    def add(self, p: Partial, published: float) -> None:
        """Take a partial (``published``: when JetStream stored it, wall clock)."""
        w = self._window(p.end)
        if w is None:
            self.misaligned += 1
            return
        highest, _ = self.heard.get(p.host, (w, 0.0))
        self.heard[p.host] = (max(highest, w), published)
        if self.history is not None and w < self.history:
            return
        if self.closer is not None and w < self.closer.next:
            if p.host in self.written.get(w, frozenset()):
                self.duplicates += 1
            else:
                self.late += 1
            return
        # A republish (a host restarted before JetStream's duplicate window caught it)
        # replaces the same host's partial: it is the same window's same figures.
        self.open.setdefault(w, {})[p.host] = p.agg

    def due(self, now: float) -> list[str]:
        """The lines of every window now complete, oldest first. Call it once the stream's
        backlog is read: a fresh fleet output starts at the oldest window the stream holds,
        the one start every holder finds (a holder that never got a line into the file,
        its disk full, leaves its successor the windows it held, not a gap)."""
        if self.closer is None:
            if not self.open:
                return []
            self.closer = Closer(self.schedule, min(self.open))
            self.history = self.closer.next
        lines: list[str] = []
        live = self.live(now)
        while True:
            w = self.closer.next
            end = end_of(w, self.base)
            if now < end:
                break
            passed = bool(live) and all(self.heard[h][0] >= w for h in live)
            if not passed and now < end + self.grace:
                break
            parts = self.open.pop(w, {})
            agg = FleetAggregate(hosts=len(parts))
            for part in parts.values():
                agg.merge(part)
            lines.extend(self.closer.close(w, agg))
            self.written[w] = frozenset(parts)
            while len(self.written) > _REMEMBERED:
                self.written.popitem(last=False)
            self.delays.append(now - end)
        return lines

    def live(self, now: float) -> list[str]:
        """The hosts heard from within the grace: a window waits for these."""
        return sorted(h for h, (_, when) in self.heard.items() if now - when <= self.grace)

    def status(self, now: float) -> dict[str, Any]:
        delays = sorted(self.delays)
        return {
            "next_window_end": (
                timestamp(end_of(self.next, self.base)) if self.next is not None else None
            ),
            "live_hosts": self.live(now),
            "late_partials": self.late,
            "duplicate_partials": self.duplicates,
            "misaligned_partials": self.misaligned,
            "delay_p50": statistics.median(delays) if delays else None,
            "delay_max": delays[-1] if delays else None,
        }
