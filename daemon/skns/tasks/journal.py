"""The task server's write-ahead journal: a kill -9 loses no job it acknowledged.

Single-host mode only (in cluster mode JetStream holds the jobs). Rows are those of
:mod:`skns.tasks.keep`, appended to ``state_dir/tasks/journal.jsonl``:

* a job's row (id, number, queue) is written before its ``result`` acknowledgement is
  sent: :meth:`Journal.accept` writes it, with the outcome rows waiting, in one
  ``write(2)``, and says False if it cannot, so that the server refuses the job ("Server
  busy") instead of acknowledging what it cannot keep. The acknowledgement waits for
  the write, not for an fsync: the page cache survives a kill -9 of the process, not a
  power loss, which may take the last jobs acknowledged;
* an outcome's row when it is stored, with its expiry, written once per loop
  iteration for all outcomes of that iteration (a crash before it only makes the job
  run again): with its final frame up to :data:`FRAME_MAX`, beyond that without it, so
  that a result of megabytes is not written a second time: jobs are pure functions of
  their number, and a big result lost with the process is computed again at start.

At start the server takes up what the journal (and the clean-stop file) hold, then
:meth:`Journal.start` rewrites the journal with just that. It is rewritten the same
way (compaction, atomically with :func:`skns.files.write_atomic`) whenever it has
grown past ``compact_bytes`` and past twice what the previous rewrite wrote, with the
live entries only: unexpired outcomes and unfinished jobs, as the store holds them.

A write that fails (a full disk, a read-only or removed directory) is undone
(a part written is truncated away, so no later row is glued to a torn one), counted,
and makes :meth:`accept` say False until a write succeeds again; outcome rows lost
that way only make their jobs run again after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..files import write_all, write_atomic
from . import keep
from .store import Task

log = logging.getLogger("skns.tasks.journal")

FILE = "journal.jsonl"
# Final frames up to this size are journaled; bigger results are computed again after a
# crash (a frame of 64 KiB is the factorial of about 25,000).
FRAME_MAX = 64 * 1024
# While the journal has no open file (its rewrite failed), a rewrite is tried at most
# this often (seconds): each writes every live entry.
_RETRY_INTERVAL = 1.0


def _row(task: Task, wall_offset: float) -> bytes:
    return keep.row(task, wall_offset, frame=len(task.frame) <= FRAME_MAX)


def _wall_offset() -> float:
    """Store time (monotonic) to epoch seconds."""
    return time.time() - time.monotonic()


class Journal:
    def __init__(
        self,
        path: Path,
        compact_bytes: int,
        live: Callable[[], list[Task]],
        supersedes: Path | None = None,
    ) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self._live = live  # every task the server holds, in the order to write them
        # The clean-stop file taken up with the journal: removed once the journal holds it.
        self._supersedes = supersedes
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        self._rows: list[bytes] = []
        self._flush_soon = False
        self._compact_soon = False
        self._retry_at = 0.0
        self._starting = False  # start() is writing the first rewrite
        self._compact_at = compact_bytes
        self.size = 0  # bytes in the file
        self.error: str | None = None  # why the last write failed; None while writable
        self.write_errors = 0
        self.compactions = 0

    async def start(self) -> None:
        """Write what the server holds (taken up from before) as the journal, and open it
        for appending. On failure the server runs, refusing jobs until a rewrite works.

        The rows are written in a thread, so that the loop goes on (heartbeats: a journal
        of hundreds of megabytes takes seconds). Outcomes stored meanwhile may be read
        half-updated there: their rows, buffered, are appended after it and replace them."""
        self._starting = True
        try:
            rewritten = await asyncio.to_thread(self._rewrite, self._live())
        except OSError as exc:
            self._rows.clear()  # the next rewrite writes them from the store
            self._rewrite_failed(exc)
            return
        finally:
            self._starting = False
        self._install(*rewritten)
        if self._rows:
            self._flush()

    def accept(self, task: Task) -> bool:
        """Write the row of ``task``, a job about to be acknowledged: True once written,
        False if it could not be (``error`` says why): then it must not be acknowledged."""
        if self._fd is None and (time.monotonic() < self._retry_at or not self._compact()):
            return False
        self._rows.append(keep.row(task, 0.0))  # a queued job's row has no wall time
        return self._flush()

    def finished(self, task: Task) -> None:
        """``task`` has its outcome: its row goes out at the end of this loop iteration."""
        if self._fd is None and not self._starting:
            return  # the next rewrite writes it from the store
        self._rows.append(_row(task, _wall_offset()))
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush_later)

    def close(self) -> None:
        """Write what waits and close the file (kept: the server removes it once the
        clean-stop file is written)."""
        if self._rows:
            self._flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def stats(self) -> dict[str, Any]:
        return {
            "bytes": self.size,
            "compactions": self.compactions,
            "write_errors": self.write_errors,
            "error": self.error,
        }

    # -- writing ----------------------------------------------------------------

    def _flush_later(self) -> None:
        self._flush_soon = False
        if self._rows and not self._starting:  # else start() writes them once it has a file
            self._flush()

    def _flush(self) -> bool:
        rows, self._rows = self._rows, []
        fd = self._fd
        if fd is None:
            return False
        data = b"".join(rows)
        try:
            write_all(fd, data)
        except OSError as exc:
            self._failed(exc)
            return False
        self.size += len(data)
        self._writable()
        if self.size >= self._compact_at and not self._compact_soon:
            # Not now: the job being accepted is not in the store yet.
            self._compact_soon = True
            self._loop.call_soon(self._compact)
        return True

    def _failed(self, exc: OSError) -> None:
        self.write_errors += 1
        fd = self._fd
        assert fd is not None
        try:
            os.ftruncate(fd, self.size)  # away with a part written: the next row starts clean
        except OSError:
            os.close(fd)
            self._fd = None  # only a rewrite can make the file whole again
            self._retry_at = time.monotonic() + _RETRY_INTERVAL
        self._refusing(exc)

    def _refusing(self, exc: OSError) -> None:
        if self.error is None:
            log.error(
                "cannot write %s (%s): new jobs are refused until it can be written",
                self.path,
                exc.strerror or exc,
            )
        self.error = f"{exc.strerror or exc}"

    def _writable(self) -> None:
        if self.error is not None:
            log.warning("%s is written again; new jobs are accepted", self.path)
            self.error = None

    def _compact(self) -> bool:
        """Rewrite the journal with the live entries only; True if it was rewritten."""
        if self._rows and self._fd is not None:
            self._flush()  # kept in the old file should the rewrite fail
        self._rows.clear()  # otherwise the store holds their state: written below
        try:
            rewritten = self._rewrite(self._live())
        except OSError as exc:
            self._rewrite_failed(exc)
            return False
        self._install(*rewritten)
        return True

    def _rewrite(self, tasks: list[Task]) -> tuple[int, int]:
        """Write ``tasks`` as the journal (atomically); its new fd and size. Raises OSError."""
        written = 0

        def lines() -> Iterator[bytes]:
            nonlocal written
            offset = _wall_offset()
            for task in tasks:
                line = _row(task, offset)
                written += len(line)
                yield line

        write_atomic(self.path, lines())
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), written

    def _rewrite_failed(self, exc: OSError) -> None:
        self._compact_soon = False
        if self._fd is None:
            self._retry_at = time.monotonic() + _RETRY_INTERVAL
            self._refusing(exc)
        else:  # the old file is still whole and open: go on appending to it
            log.warning("cannot rewrite %s (%s); appending on", self.path, exc)
            self._compact_at = self.size + self.compact_bytes

    def _install(self, fd: int, written: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self.size = written
        self._compact_at = max(self.compact_bytes, 2 * written)
        self._compact_soon = False
        self.compactions += 1
        self._writable()
        if self._supersedes is not None:
            self._supersedes.unlink(missing_ok=True)
            self._supersedes = None
