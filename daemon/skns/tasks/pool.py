"""A pool of worker processes that can stop one job: by killing its worker.

multiprocessing's pools cannot take back a job once it runs; this one can,
because each worker is a process of our own, forked from the server, with a
socket pair to the server. A worker runs its jobs one at a time, in order; the
dispatcher hands each worker up to ``prefetch`` jobs, so that a worker finishing
one job starts the next at once instead of waiting for the server's loop.

Only the first job a worker holds is running. It has a deadline timer on the
server's loop, counted from when it started: when it was sent to an idle
worker, or when the worker reported the end of the job before it. At the
deadline the worker is SIGKILLed and the client is told "Timeout error" right
then; the jobs queued behind it in that worker had not started and go back to
the front of the queue, and a fresh worker takes the dead one's place.

A worker that dies on its own (the OOM killer, a stray signal) fails its
running job with "Task failed" and is replaced too; that job is not retried,
so a job that kills its worker cannot take the pool down in a loop. Dead
workers are reaped through a pidfd watched by the loop, so nothing waits on
them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Hashable

from . import protocol, wire, worker
from .fairqueue import FairQueue
from .store import DONE, FAILED, QUEUED, RUNNING, TIMED_OUT, Task

log = logging.getLogger("skns.tasks.pool")

# (task, state, final frame): called once per job, on the server's loop.
FinishFn = Callable[[Task, str, bytes], None]

_RECV_BYTES = 1 << 18
_RESPAWN_DELAY = 1.0  # after a failed fork


class _Worker:
    """The server's end of one worker process."""

    __slots__ = ("deadline", "index", "jobs", "pid", "pidfd", "reader", "sock", "timer")

    def __init__(self, index: int, pid: int, sock: socket.socket) -> None:
        self.index = index
        self.pid = pid
        self.sock = sock
        self.pidfd = os.pidfd_open(pid)
        self.reader = wire.ResultReader()
        # (task, monotonic time it was sent), oldest first; the first one is running.
        self.jobs: deque[tuple[Task, float]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # monotonic time the running job must end by


class Pool:
    """The workers of one queue ("soft" or "hard") and the jobs waiting for them."""

    def __init__(
        self, queue: str, size: int, limit: float, prefetch: int, finish: FinishFn
    ) -> None:
        self.queue = queue
        self.size = size
        self.limit = limit
        self.prefetch = prefetch
        self._finish = finish
        self._loop = asyncio.get_running_loop()
        self._pending: FairQueue[Task] = FairQueue()  # one turn per owner (connection)
        self._workers: dict[int, _Worker] = {}  # by pid, in spawn order
        self._dying: dict[int, int] = {}  # pid -> pidfd of workers not reaped yet
        self._dispatch_soon = False
        self._closed = False
        self.done = 0
        self.timed_out = 0
        self.failed = 0
        self.replaced = 0

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        for index in range(self.size):
            self._spawn(index)

    def close(self) -> None:
        """Kill every worker and wait for them (SIGKILL: a matter of milliseconds)."""
        self._closed = True
        for w in list(self._workers.values()):
            self._retire(w)
        for pid, pidfd in list(self._dying.items()):
            self._loop.remove_reader(pidfd)
            _reap(pid, pidfd, block=True)
        self._dying.clear()

    def _spawn(self, index: int) -> None:
        if self._closed:
            return
        try:
            parent_end, child_end = socket.socketpair()
        except OSError as exc:
            log.error("%s pool: cannot create a worker socket: %s", self.queue, exc)
            self._loop.call_later(_RESPAWN_DELAY, self._spawn, index)
            return
        title = f"skns-metrics: tasks-worker {self.queue} {index}"
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            parent_end.close()
            child_end.close()
            log.error("%s pool: cannot fork a worker: %s", self.queue, exc)
            self._loop.call_later(_RESPAWN_DELAY, self._spawn, index)
            return
        if pid == 0:  # pragma: no cover - runs in the worker, which exits
            worker.become_worker(child_end.fileno(), title, parent)
        child_end.close()
        parent_end.setblocking(False)
        w = _Worker(index, pid, parent_end)
        self._workers[pid] = w
        self._loop.add_reader(parent_end.fileno(), self._readable, w)
        self._dispatch()

    def _retire(self, w: _Worker) -> None:
        """Stop a worker for good: kill it, stop listening, reap it once it is gone."""
        del self._workers[w.pid]
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        self._loop.remove_reader(w.sock.fileno())
        w.sock.close()
        # Not reaped yet, so the pid cannot have been reused: the signal reaches our worker.
        os.kill(w.pid, signal.SIGKILL)
        self._dying[w.pid] = w.pidfd
        self._loop.add_reader(w.pidfd, self._reaped, w.pid)

    def _reaped(self, pid: int) -> None:
        pidfd = self._dying.pop(pid)
        self._loop.remove_reader(pidfd)
        _reap(pid, pidfd, block=False)

    def _replace(self, w: _Worker) -> None:
        """Retire ``w``; its jobs that had not started go back to the front of the queue."""
        self._retire(w)
        self.replaced += 1
        waiting = [task for task, _sent in w.jobs]
        w.jobs.clear()
        for task in reversed(waiting):
            task.state = QUEUED
            self._pending.appendleft(task)
        # After the callbacks already queued, among them the writer of the frame that
        # tells the client its job timed out or failed: the client hears of it before the fork.
        self._loop.call_soon(self._spawn, w.index)

    # -- jobs -------------------------------------------------------------

    def submit(self, task: Task, owner: Hashable = None) -> None:
        """Queue ``task``; owners take turns, so one owner's backlog does not delay others."""
        self._pending.append(task, owner)
        # Once per loop iteration: the jobs submitted meanwhile go out in one write per worker.
        if not self._dispatch_soon:
            self._dispatch_soon = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_soon = False
        pending = self._pending
        if not pending:
            return
        # Fill level by level: every idle worker gets a job before any gets a second one.
        batches: dict[_Worker, list[bytes]] = {}
        now = time.monotonic()
        for level in range(self.prefetch):
            for w in self._workers.values():
                if len(w.jobs) == level and pending:
                    task = pending.popleft()
                    w.jobs.append((task, now))
                    batches.setdefault(w, []).append(wire.job(task.number, task.id))
                    if level == 0:
                        self._started(w, now)
            if not pending:
                break
        for w, records in batches.items():
            try:
                # Tiny records into an empty-enough buffer: never a partial write in practice.
                w.sock.sendall(b"".join(records))
            except OSError:
                self._lost(w)

    def _started(self, w: _Worker, at: float) -> None:
        """The first job of ``w`` started at monotonic time ``at``: arm its deadline."""
        w.jobs[0][0].state = RUNNING
        w.deadline = at + self.limit
        w.timer = self._loop.call_later(max(0.0, w.deadline - time.monotonic()), self._expired, w)

    def _readable(self, w: _Worker) -> None:
        try:
            data = w.sock.recv(_RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost(w)
            return
        for status, ended_ns, payload in w.reader.feed(data):
            if not w.jobs:  # a record with no job: the worker is broken
                log.error("%s pool: worker %d sent a result with no job", self.queue, w.pid)
                self._replace(w)
                return
            task, _sent = w.jobs.popleft()
            w.timer.cancel()  # type: ignore[union-attr]
            w.timer = None
            if w.jobs:
                # The next job was waiting in the worker, or arrived after this one ended.
                self._started(w, max(ended_ns / 1e9, w.jobs[0][1]))
            if status == wire.OK:
                self.done += 1
                self._finish(task, DONE, payload)
            else:
                self.failed += 1
                detail = payload.decode(errors="replace")
                log.warning("%s job %s (n=%d) failed: %s", self.queue, task.id, task.number, detail)
                self._finish(task, FAILED, protocol.failed_frame(task.id, detail))
        if self._pending:
            self._dispatch()

    def _expired(self, w: _Worker) -> None:
        """The running job is past its limit: kill the worker, tell the client now."""
        remaining = w.deadline - time.monotonic()
        if remaining > 0:  # the loop's timers are coarser than the clock: never kill early
            w.timer = self._loop.call_later(remaining, self._expired, w)
            return
        w.timer = None
        task, _sent = w.jobs.popleft()
        os.kill(w.pid, signal.SIGKILL)  # first of all: the job stops computing now
        log.info(
            "%s job %s (n=%d) passed its %g s limit: worker %d killed and replaced",
            self.queue,
            task.id,
            task.number,
            self.limit,
            w.pid,
        )
        self.timed_out += 1
        self._finish(task, TIMED_OUT, protocol.timeout_frame(task.id, self.limit))
        self._replace(w)

    def _lost(self, w: _Worker) -> None:
        """The worker's socket failed or closed: it died (or broke) on its own."""
        if w.pid not in self._workers:  # already retired
            return
        log.warning("%s pool: worker %d died unexpectedly; replacing it", self.queue, w.pid)
        if w.jobs:
            task, _sent = w.jobs.popleft()
            self.failed += 1
            self._finish(task, FAILED, protocol.failed_frame(task.id, "the worker process died"))
        self._replace(w)

    # -- observation ------------------------------------------------------

    def stats(self) -> dict[str, int | float]:
        busy = [w for w in self._workers.values() if w.jobs]
        return {
            "queued": len(self._pending) + sum(len(w.jobs) - 1 for w in busy),
            "running": len(busy),
            "done": self.done,
            "timed_out": self.timed_out,
            "failed": self.failed,
            "workers": len(self._workers),
            "replaced": self.replaced,
            "limit": self.limit,
        }

    @property
    def queued(self) -> int:
        """Jobs not yet handed to a worker."""
        return len(self._pending)

    def pids(self) -> list[int]:
        return list(self._workers)


def _reap(pid: int, pidfd: int, *, block: bool) -> None:
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # already reaped
        pass
    finally:
        os.close(pidfd)
