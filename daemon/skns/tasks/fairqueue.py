"""A job queue that takes turns between owners (connections), FIFO within each.

With one FIFO, a client that pipelines hundreds of jobs puts every other
client's job behind all of them. Here each owner has its own FIFO and the
queue hands out one job per owner in turn: a client with one job waits for at
most one job of each other client that has any queued, however many they have.
Jobs put back at the front (those a killed worker held but had not started)
come out first, before any turn.

Pure logic; every operation is O(1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    __slots__ = ("_front", "_len", "_owners")

    def __init__(self) -> None:
        self._front: deque[T] = deque()
        # Owners with jobs queued, in turn order (a dict keeps insertion order).
        self._owners: dict[Hashable, deque[T]] = {}
        self._len = 0

    def append(self, item: T, owner: Hashable = None) -> None:
        """Queue ``item`` behind ``owner``'s other items."""
        items = self._owners.get(owner)
        if items is None:
            items = self._owners[owner] = deque()
        items.append(item)
        self._len += 1

    def appendleft(self, item: T) -> None:
        """Put ``item`` back at the very front (it had been handed out already)."""
        self._front.appendleft(item)
        self._len += 1

    def popleft(self) -> T:
        """The next item: the front first, then the owner whose turn it is."""
        if self._front:
            self._len -= 1
            return self._front.popleft()
        if not self._owners:
            raise IndexError("pop from an empty FairQueue")
        owner = next(iter(self._owners))
        items = self._owners.pop(owner)
        item = items.popleft()
        if items:
            self._owners[owner] = items  # to the end of the turn order
        self._len -= 1
        return item

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0
