"""The router's arrival sequence, increasing across restarts and crashes.

Seqs are handed out from a leased block: before the router uses a seq at or
above the stored limit it durably stores a new limit ``BLOCK`` higher, so one
small fsynced write covers a million events, and after a crash the router
starts at the stored limit, above every seq it ever issued (a gap is harmless;
shards drop a seq they already hold, so a reused seq would lose an event).
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_atomic

BLOCK = 1 << 20


def _store(path: Path, value: int) -> None:
    write_atomic(path, b"%d\n" % value, mode=0o600)


class Sequence:
    __slots__ = ("_limit", "_path", "next")

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            stored = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            stored = 0
        self.next = max(stored, 1)
        self._limit = self.next
        self._lease()

    def _lease(self) -> None:
        self._limit = self.next + BLOCK
        _store(self._path, self._limit)

    def skip_past(self, seq: int) -> None:
        """Never issue ``seq`` or anything below it (a shard already holds it)."""
        if seq >= self.next:
            self.next = seq + 1
            if self.next >= self._limit:
                self._lease()

    def take(self, count: int) -> int:
        """Reserve ``count`` consecutive seqs; returns the first."""
        first = self.next
        self.next = first + count
        if self.next >= self._limit:
            self._lease()
        return first
