"""Per-account FIFO scheduling: one event at a time per account, accounts in parallel.

An account with queued events is *active*: exactly one runner works through
its queue, head first. :meth:`Scheduler.push` says when a new runner is needed
(the account was idle); :meth:`Scheduler.advance` drops the finished head and
gives the runner its next event, or None when the account went idle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Scheduler(Generic[T]):
    __slots__ = ("_queues", "queued")

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[T]] = {}
        self.queued = 0  # items held, running heads included

    def push(self, account: Hashable, item: T) -> bool:
        """Queue ``item``; True when the account was idle and ``item`` should start now."""
        self.queued += 1
        queue = self._queues.get(account)
        if queue is None:
            self._queues[account] = deque((item,))
            return True
        queue.append(item)
        return False

    def advance(self, account: Hashable) -> T | None:
        """The running head of ``account`` finished: its next item, or None (now idle)."""
        queue = self._queues[account]
        queue.popleft()
        self.queued -= 1
        if queue:
            return queue[0]
        del self._queues[account]
        return None

    @property
    def active(self) -> int:
        """Accounts with an event running or waiting."""
        return len(self._queues)
