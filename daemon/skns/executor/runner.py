"""Running events: one at a time per account in arrival order, accounts concurrently.

Shared by the single-host shard (one :class:`Runner` fed from its journal) and
the cluster-mode partition owner (one :class:`Runner` per partition it owns,
all sharing one :class:`Handler` and so one thread pool).

An account with queued events has one runner task going through its queue
(:class:`~skns.executor.schedule.Scheduler`). A handler that raises is tried
again after a backoff, up to ``retries`` extra attempts, then the event counts
as failed; ``handler_timeout`` bounds each attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .events import Event
from .handlers import resolve
from .schedule import Scheduler
from .settings import ExecutorSettings

log = logging.getLogger("skns.executor.runner")


class Handler:
    """The configured handler, called as a shard calls it: an async one on the event
    loop, any other in a thread pool (made on first use)."""

    def __init__(self, config: ExecutorSettings) -> None:
        self.config = config
        self.function, self.is_async = resolve(config.handler)
        self.threads: ThreadPoolExecutor | None = None

    def _call(self, event: Event) -> Awaitable[Any]:
        if self.is_async:
            return self.function(event)
        if self.threads is None:
            # ThreadPoolExecutor starts a thread only when none is idle: with at most one
            # handler running per account, the pool grows to the number of accounts with
            # work (a sleeping sync handler holds its thread), capped by `threads`.
            self.threads = ThreadPoolExecutor(self.config.threads, thread_name_prefix="handler")
        return asyncio.get_running_loop().run_in_executor(self.threads, self.function, event)

    async def attempt(self, event: Event) -> None:
        """One run of the handler; past ``handler_timeout`` it counts as failed.

        A timed-out async handler is cancelled; a sync one cannot be stopped, so
        it finishes in its thread while the account moves on.
        """
        timeout = self.config.handler_timeout
        if not timeout:
            await self._call(event)
            return
        try:
            # Not asyncio.wait_for: on 3.11 it swallows a cancellation (drain, fencing) that
            # comes in the loop turn the handler ends, and the account would go on.
            async with asyncio.timeout(timeout):
                await self._call(event)
        except TimeoutError:
            raise TimeoutError(f"handler took more than {timeout:g} s") from None

    def shutdown(self) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)


class Runner:
    """Per-account FIFOs of events and the tasks running them.

    ``finished(event, ok)`` is called once an event is over (``ok`` False: it
    failed every attempt), after its account moved on to its next event; an
    event whose run was cancelled (:meth:`drain`, :meth:`cancel`) is not.
    """

    def __init__(
        self,
        config: ExecutorSettings,
        handler: Handler,
        finished: Callable[[Event, bool], None],
    ) -> None:
        self.config = config
        self.handler = handler
        self.finished = finished
        self.scheduler: Scheduler[Event] = Scheduler()
        self.runners: set[asyncio.Task[None]] = set()
        self.stopping = False  # runners take no next event
        self.running = 0
        self.done = 0
        self.failed = 0
        self.retries = 0

    def admit(self, event: Event) -> None:
        """Queue ``event`` behind its account's earlier ones (started now if none)."""
        if self.scheduler.push(event.account_id, event):
            runner = asyncio.create_task(self._run_account(event))
            self.runners.add(runner)
            runner.add_done_callback(self.runners.discard)

    async def _run_account(self, event: Event | None) -> None:
        scheduler = self.scheduler
        while event is not None and not self.stopping:
            ok = await self._run(event)
            finished = event
            event = scheduler.advance(event.account_id)
            self.finished(finished, ok)

    async def _run(self, event: Event) -> bool:
        config = self.config
        self.running += 1
        try:
            while True:
                try:
                    await self.handler.attempt(event)
                except Exception as exc:
                    if event.attempt > config.retries:
                        self.failed += 1
                        log.warning(
                            "event %d of account %r failed after %d attempts: %r",
                            event.seq,
                            event.account_id,
                            event.attempt,
                            exc,
                        )
                        return False
                    self.retries += 1
                    delay = config.retry_backoff * 2 ** (event.attempt - 1)
                    event.attempt += 1
                    await asyncio.sleep(min(delay, config.retry_backoff_max))
                else:
                    self.done += 1
                    return True
        finally:
            self.running -= 1

    async def drain(self, timeout: float) -> None:
        """Start no next event; let running ones finish for up to ``timeout`` s, then
        cancel them (they run again, from the journal or the stream)."""
        self.stopping = True
        if self.runners:
            await asyncio.wait(set(self.runners), timeout=timeout)
        await self.cancel()

    async def cancel(self) -> None:
        """Stop every run at once."""
        self.stopping = True
        for runner in list(self.runners):
            runner.cancel()
        await asyncio.gather(*self.runners, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {
            "in_flight": self.running,
            "backlog": self.scheduler.queued,
            "accounts": self.scheduler.active,
            "done": self.done,
            "failed": self.failed,
            "retries": self.retries,
        }
