"""Turning closed base windows into output lines: pure logic, no I/O.

The :class:`Closer` is fed base windows in order, each with its merged
aggregate, and returns the lines to append. It carries the longer intervals'
running totals, and what a previous run of the service left unwritten
(restored from the state file), so every window the service ran for is
written exactly once and a window it was down for is never invented.
"""

from __future__ import annotations

from typing import Any

from .window import Aggregate, Schedule, end_of, line

STATE_VERSION = 1


class Closer:
    def __init__(self, schedule: Schedule, first: int) -> None:
        self.schedule = schedule
        self.next = first  # the next base window to close
        self.carry: dict[int, Aggregate] = {}  # restored partials of base windows not yet closed
        self.open: dict[int, tuple[int, Aggregate]] = {}  # multiple -> (interval index, totals)

    def close(self, w: int, agg: Aggregate) -> list[str]:
        """Close base window ``w`` (which must be ``self.next``); return its lines."""
        if w != self.next:
            raise ValueError(f"window {w} closed out of order (expected {self.next})")
        agg.merge(self.carry.pop(w, Aggregate()))
        flushed: list[str] = []
        lines: list[str] = []
        for seconds, k in zip(self.schedule.intervals, self.schedule.multiples, strict=True):
            index = w // k
            held = self.open.get(k)
            if held and held[0] != index:
                # The service was down from inside that interval to past its end (a restore
                # skipping windows): it ran for part of it, so its line is owed.
                end_w = (held[0] + 1) * k - 1
                flushed.append(line(end_of(end_w, self.schedule.base), seconds, held[1]))
                held = None
            totals = held[1] if held else type(agg)()
            totals.merge(agg)
            if (w + 1) % k == 0:
                lines.append(line(end_of(w, self.schedule.base), seconds, totals))
                self.open.pop(k, None)
            else:
                self.open[k] = (index, totals)
        self.next = w + 1
        return flushed + lines

    def snapshot(self, pending: dict[int, Aggregate]) -> dict[str, Any]:
        """What a stopping service saves: base windows not yet closed (with their
        partials) and the running totals of the longer intervals."""
        windows = {}
        for w in sorted(pending.keys() | self.carry.keys()):
            total = Aggregate()
            total.merge(pending.get(w, Aggregate()))
            total.merge(self.carry.get(w, Aggregate()))
            windows[str(w)] = total.as_list()
        return {
            "version": STATE_VERSION,
            "base": self.schedule.base,
            "intervals": list(self.schedule.intervals),
            "windows": windows,
            "open": {str(k): [i, a.as_list()] for k, (i, a) in self.open.items()},
        }

    def restore(self, state: dict[str, Any], now: int) -> list[str]:
        """Take over a snapshot at base window ``now``; return the lines owed by the
        previous run: its windows and intervals that ended while it was down."""
        if (
            state.get("version") != STATE_VERSION
            or state.get("base") != self.schedule.base
            or sorted(state.get("intervals", ())) != list(self.schedule.intervals)
        ):
            raise ValueError("state was saved with another window configuration")
        self.open = {
            int(k): (int(i), Aggregate.from_list(a)) for k, (i, a) in state["open"].items()
        }
        lines: list[str] = []
        for w in sorted(int(w) for w in state["windows"]):
            agg = Aggregate.from_list(state["windows"][str(w)])
            if w >= now:
                self.carry[w] = agg
            else:  # it ended while the service was down: write it now
                self.next = w
                lines.extend(self.close(w, agg))
        # Intervals the previous run was up for part of, that ended while it was down.
        for k, (index, totals) in sorted(self.open.items()):
            if index != now // k:
                end_w = (index + 1) * k - 1
                seconds = self.schedule.intervals[self.schedule.multiples.index(k)]
                lines.append(line(end_of(end_w, self.schedule.base), seconds, totals))
                del self.open[k]
        self.next = max(self.next, now)
        return lines
