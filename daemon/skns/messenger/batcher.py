"""Group commit: the posts waiting at the moment a transaction starts share it.

With batching on, a replica has at most one transaction in flight. A post
that arrives while none is in flight starts one at once (alone: no added
latency when idle); posts arriving meanwhile wait, and when the transaction
ends the next one takes all of them (up to ``batch_max``). Under load the
batch size follows the load by itself: one lock, one commit, one round trip
for many posts. A failed transaction fails every post in it, and only those.

Under load (the last transaction carried more than one post) the next one
waits ``delay`` seconds first, like PostgreSQL's ``commit_delay``: more posts
join it, and when the CPU is the bottleneck, fewer, larger transactions leave
more of it for the posts themselves. An idle replica never waits.

With batching off every post runs its own transaction at once (the
benchmark's baseline); the store's connection pool bounds how many run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("skns.messenger.batcher")

P = TypeVar("P")
R = TypeVar("R")

# Runs one transaction for the posts, returns one result per post in order.
RunFn = Callable[[list[P]], Awaitable[list[R]]]


class GroupCommit(Generic[P, R]):
    def __init__(
        self, run: RunFn[P, R], batch_max: int, batching: bool = True, delay: float = 0.0
    ) -> None:
        self._run = run
        self.batch_max = batch_max
        self.batching = batching
        self.delay = delay
        self._last_size = 0
        self._waiting: list[tuple[P, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        # Counters for stats.
        self.batches = 0
        self.posts = 0
        self.failed_batches = 0
        self.largest_batch = 0
        self.transaction_seconds = 0.0  # summed over transactions (they overlap without batching)

    async def submit(self, post: P) -> R:
        """Store ``post`` (with whoever else is waiting) and return its result."""
        if not self.batching:
            started = time.perf_counter()
            try:
                (result,) = await self._run([post])
            except Exception:
                self.failed_batches += 1
                raise
            finally:
                self.batches += 1
                self.posts += 1
                self.largest_batch = max(self.largest_batch, 1)
                self.transaction_seconds += time.perf_counter() - started
            return result
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((post, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                if self.delay and self._last_size > 1:
                    await asyncio.sleep(self.delay)
                batch = self._waiting[: self.batch_max]
                del self._waiting[: self.batch_max]
                self._last_size = len(batch)
                await self._one(batch)
        finally:
            self._task = None
            self._last_size = 0  # idle again: the next post goes at once

    async def _one(self, batch: list[tuple[P, asyncio.Future[R]]]) -> None:
        started = time.perf_counter()
        self.batches += 1
        self.posts += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = await self._run([post for post, _ in batch])
        except Exception as exc:
            self.failed_batches += 1
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # cancelled: the replica is stopping
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise exc
        finally:
            self.transaction_seconds += time.perf_counter() - started
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its request may have been cancelled meanwhile
                future.set_result(result)

    async def close(self) -> None:
        """Let the transaction in flight finish (its posts get their answers)."""
        if self._task is not None:
            await asyncio.shield(self._task)
