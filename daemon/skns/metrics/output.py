"""The append-only ``metrics.jsonl`` file.

A full disk (ENOSPC, EDQUOT), an I/O error or a file that cannot be opened never
raises out of :class:`Output`: the lines not written stay queued in memory (up to
``max_pending``; past that the oldest are dropped and counted), :meth:`Output.flush`
tries again on later ticks, and :meth:`Output.condition` says what is wrong for
status. The file only ever grows by whole lines: a write cut short is truncated back
to the end of the last whole line it wrote, and a torn tail found at open (a crash in
mid-write) is truncated away, so a later line is never glued onto a half line.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import os
import time
from pathlib import Path

from .window import place

log = logging.getLogger("skns.metrics")

# About a week of 10 s and 60 s lines (~120 bytes each): plenty to ride out a full disk.
MAX_PENDING = 100_000
# Seconds between two attempts while writes fail (a status poll or a new window does not
# bring the next one forward), and the most one attempt writes before it fsyncs.
RETRY = 1.0
_WRITE_CHUNK = 1 << 20
_TAIL_CHUNK = 4096


class Output:
    """Appends lines; flushes each batch and fsyncs it (one batch per closed window).

    ``reopen`` follows a rename (logrotate): new lines go to a new file at the path.
    """

    def __init__(self, path: Path, max_pending: int = MAX_PENDING, retry: float = RETRY) -> None:
        self.path = path
        self.max_pending = max_pending
        self.retry = retry
        self.lines_written = 0
        self.lines_dropped = 0
        self.write_errors = 0
        self.pending: collections.deque[bytes] = collections.deque()
        self.error: OSError | None = None  # the last failure, while it lasts
        self.error_since: float | None = None  # wall clock of the first failure in a row
        self._fd = -1
        # Where the file must be cut back to before the next append (a write cut short
        # whose truncation failed too), or None when it ends with a whole line.
        self._cut: int | None = None
        self._dropping = False
        self._retry_at = 0.0  # monotonic time of the next attempt after a failure
        self._want_reopen = False  # a reopen failed: writes go to the old file meanwhile
        self.reopen()

    # -- opening ----------------------------------------------------------------------

    def reopen(self) -> bool:
        """Open the file at ``path`` (again); the old one is closed once the new one is open.
        If that fails, lines go on to the old file (if any) and flushes retry the reopen."""
        self._want_reopen = True
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self._failed(exc)
            return False
        try:
            _cut_torn_tail(fd, self.path)
        except OSError as exc:
            os.close(fd)
            self._failed(exc)
            return False
        if self._cut is not None and self._fd >= 0:  # leave the old file whole too
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._cut)
        self.close()
        self._fd = fd
        self._cut = None
        self._want_reopen = False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- writing ----------------------------------------------------------------------

    def write(self, lines: list[str]) -> None:
        """Queue ``lines`` and write everything queued; never raises."""
        self.pending.extend(f"{text}\n".encode() for text in lines)
        excess = len(self.pending) - self.max_pending
        if excess > 0:
            for _ in range(excess):
                self.pending.popleft()
            if not self._dropping:  # once per outage: the count is in status
                log.error("%s: %d lines wait already: dropping the oldest", self.path, excess)
            self._dropping = True
            self.lines_dropped += excess
        self.flush()

    def flush(self) -> bool:
        """Try to write every queued line; True when none is left. Never raises."""
        if not self.pending:
            return True
        if self.error is not None and time.monotonic() < self._retry_at:
            return False
        if self._want_reopen and not self.reopen() and self._fd < 0:
            return False
        try:
            while self.pending:
                self._append()
        except OSError as exc:
            self._failed(exc)
            return False
        if self._want_reopen:  # written to the old file; the reopen's error stands
            return True
        if self.error is not None:
            log.warning(
                "%s: writable again after %.0f s (%s)",
                self.path,
                time.time() - (self.error_since or time.time()),
                self.error.strerror or self.error,
            )
        self.error = self.error_since = None
        self._dropping = False
        return True

    def _append(self) -> None:
        """Write (and fsync) the oldest queued lines, up to about _WRITE_CHUNK bytes."""
        fd = self._fd
        if self._cut is not None:
            os.ftruncate(fd, self._cut)
            self._cut = None
        start = os.lseek(fd, 0, os.SEEK_END)
        lines = []
        size = 0
        for line in self.pending:
            if lines and size + len(line) > _WRITE_CHUNK:
                break
            lines.append(line)
            size += len(line)
        data = b"".join(lines)
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
            os.fsync(fd)
        except OSError:
            # Keep only the whole lines this write got into the file (none if fsync
            # failed: their durability is unknown, so they are written again).
            whole = _whole_lines(lines, done if done < len(data) else 0)
            self._cut = start + sum(len(x) for x in lines[:whole])
            self._settle(whole)
            os.ftruncate(fd, self._cut)
            self._cut = None
            raise
        self._settle(len(lines))

    def _settle(self, n: int) -> None:
        for _ in range(n):
            self.pending.popleft()
        self.lines_written += n

    def _failed(self, exc: OSError) -> None:
        self.write_errors += 1
        self._retry_at = time.monotonic() + self.retry
        if self.error is None or self.error.errno != exc.errno:
            log.error(
                "%s: cannot write (%s); %d line(s) kept in memory, retrying",
                self.path,
                exc.strerror or exc,
                len(self.pending),
            )
        if self.error is None:
            self.error_since = time.time()
        self.error = exc

    # -- status -----------------------------------------------------------------------

    def condition(self) -> str | None:
        """``"ENOSPC since 2026-12-01T02:10:00Z, 12 lines pending"``, or None when all is well."""
        if self.error is None and not self.pending:
            return None
        words = []
        if self.error is not None:
            name = errno.errorcode.get(self.error.errno or 0, "error")
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.error_since))
            words.append(f"{name} since {since}")
        if self.pending:
            words.append(f"{len(self.pending)} lines pending")
        if self.lines_dropped:
            words.append(f"{self.lines_dropped} lines dropped")
        return ", ".join(words)

    def status(self) -> dict[str, object]:
        return {
            "lines_written": self.lines_written,
            "lines_pending": len(self.pending),
            "lines_dropped": self.lines_dropped,
            "write_errors": self.write_errors,
            "error": None if self.error is None else str(self.error.strerror or self.error),
            "error_since": self.error_since,
            "condition": self.condition(),
        }


def _whole_lines(lines: list[bytes], written: int) -> int:
    """How many of ``lines`` fit whole in the first ``written`` bytes."""
    n = 0
    for line in lines:
        written -= len(line)
        if written < 0:
            break
        n += 1
    return n


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Truncate the file back to its last newline if it does not end with one."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    pos = end
    keep = 0
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            keep = pos + nl + 1
            break
    os.ftruncate(fd, keep)
    log.warning(
        "%s: cut a torn last line (%d bytes) left by an interrupted write", path, end - keep
    )


def last_lines(path: Path, n: int) -> list[dict[str, object]]:
    """The last ``n`` parseable lines of the file (reads only its tail)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            chunk = 4096
            data = b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(chunk, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
                chunk *= 2
    except FileNotFoundError:
        return []
    rows: list[dict[str, object]] = []
    for raw in data.splitlines()[-n:] if n else []:
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def missing(lines: list[str], tail: list[dict[str, object]]) -> list[str]:
    """Of ``lines`` (in output order), those after the file's last line ``tail`` (as
    :func:`last_lines` gives it): a line is known by its timestamp and count_type."""
    if not lines or not tail:
        return lines
    last = (tail[-1].get("timestamp"), tail[-1].get("count_type"))
    rows = [json.loads(text) for text in lines]
    keys = [(row["timestamp"], row["count_type"]) for row in rows]
    if last in keys:
        return lines[keys.index(last) + 1 :]
    # Not among them: keep those that come after it in output order. The timestamp alone
    # is not enough: a full disk can cut a close between its lines, leaving a window's
    # base line written and its longer intervals' lines (same timestamp) held.
    written = place(tail[-1])
    return [text for text, row in zip(lines, rows, strict=True) if place(row) > written]
