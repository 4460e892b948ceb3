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
way (compaction) whenever it has grown past ``compact_bytes`` and past twice what the
previous rewrite wrote, with the live entries only: unexpired outcomes and unfinished
jobs, as the store holds them. A rewrite writes a new file in a thread (hundreds of
megabytes take seconds, during which the loop serves on and keeps appending to the
old file), copies into it what was appended meanwhile, and renames it over the old
one: every row acknowledged is in the file at the path, before the rename and after
it. (Not :func:`skns.files.write_atomic`: it renames in the thread, before the rows
appended meanwhile are in the new file.) The new file is fsynced before the rename, so
a power loss leaves the old journal or a whole new one.

A write that fails (a full disk, a read-only or removed directory) is undone
(a part written is truncated away, so no later row is glued to a torn one), counted,
and makes :meth:`accept` say False until a write succeeds again; outcome rows lost
that way only make their jobs run again after a crash. If the file itself is lost
(its first rewrite failed, or a failed write could not be undone), jobs are refused
until a rewrite (tried at most once a second, when a job comes) succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import fsync_dir, write_all
from . import keep
from .store import Task

log = logging.getLogger("skns.tasks.journal")

FILE = "journal.jsonl"
# Final frames up to this size are journaled; bigger results are computed again after a
# crash (a frame of 64 KiB is the factorial of about 25,000).
FRAME_MAX = 64 * 1024
# After a rewrite failed, the next is tried at most this often (seconds): each writes
# every live entry.
_RETRY_INTERVAL = 1.0
# Rows appended while a rewrite ran are copied into the new file in a thread while there
# are more than this many bytes of them; the loop copies the rest before the rename.
_TAIL_BYTES = 1 << 20
_WRITE_CHUNK = 1 << 20


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
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        self._rows: list[bytes] = []
        self._flush_soon = False
        self._rewriting: asyncio.Task[None] | None = None
        self._since: list[bytes] | None = None  # appended to the old file while rewriting
        self._retry_at = 0.0
        self._compact_at = compact_bytes
        self.size = 0  # bytes in the file
        self.error: str | None = None  # why the last write failed; None while writable
        # Kept once writes work again: a full disk that a later, smaller row fits lifts the
        # refusal at once, and status would otherwise show no trace of it but the count.
        self.last_error: str | None = None
        self.write_errors = 0
        self.compactions = 0

    async def start(self) -> None:
        """Write what the server holds (taken up from before) as the journal, and open it
        for appending. On failure the server runs, refusing jobs until a rewrite works."""
        self._rewrite_soon()
        if self._rewriting is not None:
            await self._rewriting

    def accept(self, task: Task) -> bool:
        """Write the row of ``task``, a job about to be acknowledged: True once written,
        False if it could not be (``error`` says why): then it must not be acknowledged."""
        if self._fd is None:
            self._rewrite_soon()
            return False
        self._rows.append(keep.row(task, 0.0))  # a queued job's row has no wall time
        return self._flush()

    def finished(self, task: Task) -> None:
        """``task`` has its outcome: its row goes out at the end of this loop iteration."""
        if self._fd is None and self._rewriting is None:
            return  # the next rewrite writes it from the store
        # With no file yet, it waits for the rewrite: that may have read the task before
        # its outcome, and this row, appended after it, replaces that one.
        self._rows.append(_row(task, _wall_offset()))
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush_later)

    def close(self) -> None:
        """Write what waits and close the file (kept: the server removes it once the
        clean-stop file is written). A rewrite under way is given up."""
        if self._rewriting is not None:
            self._rewriting.cancel()
        if self._rows and self._fd is not None:
            self._flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self._tmp.unlink(missing_ok=True)

    def stats(self) -> dict[str, Any]:
        return {
            "bytes": self.size,
            "compactions": self.compactions,
            "write_errors": self.write_errors,
            "error": self.error,
            "last_error": self.last_error,
        }

    # -- appending --------------------------------------------------------------

    def _flush_later(self) -> None:
        self._flush_soon = False
        if self._rows and self._fd is not None:  # else the rewrite writes them when done
            self._flush()

    def _flush(self) -> bool:
        rows, self._rows = self._rows, []
        fd = self._fd
        assert fd is not None
        data = b"".join(rows)
        try:
            write_all(fd, data)
        except OSError as exc:
            self._failed(exc)
            return False
        self.size += len(data)
        if self._since is not None:
            self._since.append(data)
        self._writable()
        if self.size >= self._compact_at:
            self._rewrite_soon()  # a task: the job being accepted is in the store by then
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
        self._refusing(exc)

    def _refusing(self, exc: OSError) -> None:
        if self.error is None:
            log.error(
                "cannot write %s (%s): new jobs are refused until it can be written",
                self.path,
                exc.strerror or exc,
            )
        self.error = self.last_error = f"{exc.strerror or exc}"

    def _writable(self) -> None:
        if self.error is not None:
            log.warning("%s is written again; new jobs are accepted", self.path)
            self.error = None

    # -- rewriting ----------------------------------------------------------------

    def _rewrite_soon(self) -> None:
        if self._rewriting is None and time.monotonic() >= self._retry_at:
            self._rewriting = self._loop.create_task(self._rewrite())

    async def _rewrite(self) -> None:
        """The live entries to a new file, then what was appended meanwhile, then the
        rename: until the rename every row is in the old file, after it in the new one."""
        self._since = []
        try:
            fd, written = await asyncio.to_thread(self._write_new, self._live())
            try:
                while sum(map(len, self._since)) > _TAIL_BYTES:
                    chunk = b"".join(self._since)
                    self._since.clear()
                    await asyncio.to_thread(write_all, fd, chunk)
                    written += len(chunk)
                tail = b"".join(self._since)
                write_all(fd, tail)
                os.replace(self._tmp, self.path)
            except BaseException:  # an OSError, or the server stops
                os.close(fd)
                with contextlib.suppress(OSError):
                    self._tmp.unlink()
                raise
        except OSError as exc:
            self._rewrite_failed(exc)
        else:
            self._install(fd, written + len(tail))
        finally:
            self._since = None
            self._rewriting = None
        if self._rows and self._fd is not None:
            self._flush()  # outcomes stored while there was no file yet

    def _write_new(self, tasks: list[Task]) -> tuple[int, int]:
        """In a thread: ``tasks`` to the temporary file, fsynced; its fd (open for
        appending) and size. Tasks may change meanwhile: their new rows come after."""
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(
            self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o640
        )
        written = 0
        try:
            offset = _wall_offset()
            chunk: list[bytes] = []
            size = 0
            for task in tasks:
                line = _row(task, offset)
                chunk.append(line)
                size += len(line)
                if size >= _WRITE_CHUNK:
                    write_all(fd, b"".join(chunk))
                    written += size
                    chunk, size = [], 0
            write_all(fd, b"".join(chunk))
            written += size
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise
        return fd, written

    def _rewrite_failed(self, exc: OSError) -> None:
        self._retry_at = time.monotonic() + _RETRY_INTERVAL
        if self._fd is None:
            self._rows.clear()  # the next rewrite writes them from the store
            self._refusing(exc)
        else:  # the old file is still whole and open: go on appending to it
            log.warning("cannot rewrite %s (%s); appending on", self.path, exc)
            self._compact_at = self.size + self.compact_bytes

    def _install(self, fd: int, size: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self.size = size
        self._compact_at = max(self.compact_bytes, 2 * size)
        self.compactions += 1
        self._writable()
        with contextlib.suppress(OSError):
            fsync_dir(self.path.parent)  # the rename, for a power loss
        if self._supersedes is not None:
            self._supersedes.unlink(missing_ok=True)
            self._supersedes = None
