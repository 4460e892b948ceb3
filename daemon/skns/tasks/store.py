"""Tasks by id, and how long their outcomes are kept.

Pure logic: the clock is injected. A task stays in the store from submission;
once finished (done, timed out or failed) its final frame is kept for ``ttl``
seconds, then forgotten. The TTL is the same for every task, so finishing
order is expiry order and a deque holds the expiry schedule: expiring is
O(1) per task, with no timer per task.

``max_bytes`` caps the memory of kept frames (a long burst of big results
within one TTL could otherwise exhaust it): past the cap the oldest outcomes
are dropped early, and counted as ``evicted``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
TIMED_OUT = "timed_out"
FAILED = "failed"


class Task:
    """One submitted job; ``watchers`` are told its final frame."""

    __slots__ = ("expires", "frame", "id", "number", "queue", "state", "watchers")

    def __init__(self, task_id: str, number: int, queue: str, watchers: list[Any]) -> None:
        self.id = task_id
        self.number = number
        self.queue = queue
        self.state = QUEUED
        self.frame = b""  # the final frame, once finished
        self.expires = 0.0
        self.watchers = watchers

    @property
    def finished(self) -> bool:
        return self.state not in (QUEUED, RUNNING)


class Store:
    def __init__(
        self, ttl: float, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._tasks: dict[str, Task] = {}
        self._expiry: deque[Task] = deque()  # finished tasks, oldest first
        self.bytes = 0
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task

    def get(self, task_id: str) -> Task | None:
        """The task, unless unknown or its outcome has expired."""
        self.sweep()
        return self._tasks.get(task_id)

    def tasks(self) -> list[Task]:
        """Every task held: unfinished ones, then outcomes oldest first."""
        return [t for t in self._tasks.values() if not t.finished] + list(self._expiry)

    def finish(self, task: Task, state: str, frame: bytes, ttl: float | None = None) -> None:
        """Record the outcome; it is kept from now for ``ttl`` seconds (default: the
        store's; less for an outcome taken over from before a restart, which must be
        finished in expiry order, oldest first)."""
        task.state = state
        task.frame = frame
        task.watchers = []
        task.expires = self._clock() + (self.ttl if ttl is None else ttl)
        self._expiry.append(task)
        self.bytes += len(frame)
        while self.bytes > self.max_bytes:
            self._drop(self._expiry.popleft())
            self.evicted += 1
        self.sweep()

    def sweep(self) -> None:
        """Forget outcomes whose TTL has run out."""
        expiry = self._expiry
        if expiry and expiry[0].expires <= self._clock():
            now = self._clock()
            while expiry and expiry[0].expires <= now:
                self._drop(expiry.popleft())
                self.expired += 1

    def _drop(self, task: Task) -> None:
        del self._tasks[task.id]
        self.bytes -= len(task.frame)
        task.frame = b""

    def stats(self) -> dict[str, int]:
        return {
            "tasks": len(self._tasks),
            "kept": len(self._expiry),
            "kept_bytes": self.bytes,
            "expired": self.expired,
            "evicted": self.evicted,
        }
