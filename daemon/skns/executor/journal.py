"""A shard's journal: append-only segments, group-committed, compacted by snapshot.

Everything a shard appends goes to one in-memory buffer; a single flusher
task writes the buffer and fsyncs it in a helper thread while the event loop
keeps taking events, so all the events that arrive during one fsync share the
next one (group commit). After each fsync the flusher reports the highest seq
now durable; the shard acks up to it.

Completions (``D``/``F`` records) ride along with the next write and are not
waited for: a completion lost in a crash only makes the event run again.

Compaction: when the segment grows past ``compact_bytes`` (or an eighth of it
with nothing pending) and is mostly garbage, the flusher starts a new segment holding only the
high-water seq and the unfinished events (taken from the shard's memory),
fsyncs it and its directory, and deletes the older segments. A crash in
between leaves both, and replaying both gives the same result.

A full disk (ENOSPC, EDQUOT) stops nothing: a write cut short is truncated back to
the last whole record, the data stays in the buffer and is written again every
:data:`RETRY_INTERVAL` seconds, and nothing more is acked until it is written;
``error`` says why meanwhile. A compaction is tried (at once, then every
:data:`COMPACT_RETRY_INTERVAL` seconds): the journal's own finished events may be
what fills the disk. At start, when the compacted segment cannot be written, the
journal appends to the newest segment instead (the older ones stay until a
compaction supersedes them). Any other write error ends the flusher
(:meth:`Journal.failure`): the shard exits and replays when restarted.

Damage: on start every segment is read record by record (see
:mod:`~skns.executor.records`); a damaged record is skipped, counted
(``journal_damaged`` in the shard's stats), logged as an error, and its
segment is copied into ``quarantine/`` before the start-up compaction deletes
it. Only the end of the newest segment may be a torn tail (an append cut short
by a crash, never acked), which is cut off with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import jsonexact
from ..files import fsync_dir, write_all
from . import records
from .records import Replay, Wire

log = logging.getLogger("skns.executor.journal")

# Events per A record in a snapshot: a damaged record loses only the events in it.
SNAPSHOT_CHUNK = 1_000
# Damaged segments are copied here (under the shard directory) and never deleted.
QUARANTINE = "quarantine"
# Write errors that go away once space is freed: written again, not fatal.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
# Seconds between two attempts to write the journal while the disk is full.
RETRY_INTERVAL = 1.0
# Seconds between two compactions tried while the disk is full (each writes a snapshot).
COMPACT_RETRY_INTERVAL = 10.0


def _segment_name(generation: int) -> str:
    return f"journal-{generation:012d}.log"


def _generation(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool,
        interval: float,
        compact_bytes: int,
        on_durable: Callable[[int], None],
        snapshot: Callable[[], tuple[list[Wire], int]],
        pending_count: Callable[[], int],
    ) -> None:
        self.directory = directory
        self._fsync = fsync
        self._interval = interval
        self._compact_bytes = compact_bytes
        self._on_durable = on_durable
        self._snapshot = snapshot  # () -> (unfinished events, highest seq accepted)
        self._pending_count = pending_count
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._buf = bytearray()
        self._done: list[int] = []
        self._failed: list[int] = []
        self._appended = 0  # highest seq in the buffer or written
        self.durable = 0  # highest seq written and fsynced
        self._fd = -1
        self._generation = 0
        self._old: list[Path] = []  # segments superseded but not yet deleted
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()  # set after each write (or nothing to write)
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None
        self.segment_bytes = 0
        self._base_bytes = 0  # size of the segment as compaction wrote it ...
        self._base_count = 0  # ... and how many unfinished events it copied
        self.writes = 0
        self.compactions = 0
        self.damaged = 0  # damaged records skipped when this journal was opened
        self.quarantined = 0  # segments kept in the quarantine directory
        self.error: str | None = None  # why the journal cannot be written now (a full disk)
        self.error_since: float | None = None  # wall clock
        self.write_errors = 0
        self._compact_retry_at = 0.0  # monotonic: no compaction on a full disk before then

    # -- start --------------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("journal-*.log"), key=_generation)

    def _recover(self) -> Replay:
        """Blocking: replay every segment, then compact them into a fresh one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        replay = Replay()
        segments = self._segments()
        for path in segments:
            found = records.scan(path.read_bytes())
            self._check(path, found, newest=path == segments[-1])
            replay.apply_all(found.records)
        self._generation = _generation(segments[-1]) if segments else 0
        self._old = segments
        try:
            self._start_segment(list(replay.unfinished()), replay.high)
        except OSError as exc:
            if exc.errno not in _NO_SPACE or not segments:
                raise
            # No room for the compacted copy: go on appending to the newest segment.
            log.warning("%s: no room to compact the journal (%s); appending", self.directory, exc)
            self._fd = os.open(segments[-1], os.O_WRONLY | os.O_APPEND)
            self._old = segments[:-1]
            self.segment_bytes = self._base_bytes = os.fstat(self._fd).st_size
            self._base_count = len(replay.pending)
        self._appended = self.durable = replay.high
        quarantine = self.directory / QUARANTINE
        self.quarantined = len(list(quarantine.iterdir())) if quarantine.is_dir() else 0
        return replay

    def _check(self, path: Path, found: records.Segment, *, newest: bool) -> None:
        """Blocking: report what reading ``path`` skipped; keep a damaged segment aside.

        Only the newest segment can end in an append cut short by a crash: that
        tail was never acked, so it is cut off. Anything else skipped held
        records that may have been acked: they are counted, logged as errors,
        and the segment is copied into the quarantine directory before
        compaction deletes it.
        """
        damaged = list(found.damaged)
        if found.legacy and found.torn:
            # The old format cannot tell a torn tail from damage: keep the evidence.
            self._quarantine(path)
        if found.torn and newest:
            log.warning("%s: ignoring %d bytes of torn tail", path, found.torn)
            with path.open("r+b") as f:
                f.truncate(path.stat().st_size - found.torn)
                os.fsync(f.fileno())
        elif found.torn:
            damaged.append((path.stat().st_size - found.torn, found.torn))
        if not damaged:
            return
        kept = self._quarantine(path)
        self.damaged += len(damaged)
        for offset, length in damaged:
            log.error(
                "%s: damaged record at offset %d (%d bytes skipped, the events in it are lost); "
                "the segment is kept as %s",
                path,
                offset,
                length,
                kept,
            )

    def _quarantine(self, path: Path) -> Path:
        """Blocking: a durable copy of ``path`` in the quarantine directory (never deleted)."""
        directory = self.directory / QUARANTINE
        directory.mkdir(exist_ok=True)
        target = directory / path.name
        if target.exists() and target.stat().st_size == path.stat().st_size:
            return target  # copied at a start that crashed before compaction
        n = 1
        while target.exists():
            target = directory / f"{path.name}.{n}"
            n += 1
        shutil.copyfile(path, target)
        with target.open("rb") as f:
            os.fsync(f.fileno())
        fsync_dir(directory)
        return target

    async def open(self) -> Replay:
        """Replay the journal; return the unfinished events and the high-water seq."""
        replay = await asyncio.get_running_loop().run_in_executor(self._pool, self._recover)
        self._flusher = asyncio.create_task(self._flush_loop())
        return replay

    async def failure(self) -> BaseException:
        """Returns only if writing the journal failed (a full disk, an I/O error), with why.

        The shard must not go on acking: it exits, and replays when restarted.
        """
        assert self._flusher is not None
        await asyncio.wait([self._flusher])
        return self._flusher.exception() or RuntimeError("journal writer stopped")

    # -- appending ------------------------------------------------------------------------

    def accept(self, body: bytes, high: int) -> None:
        """Append events (an A record body) whose highest seq is ``high``."""
        self._buf += records.record(records.ACCEPTED, body)
        self._appended = high
        self._wake.set()

    def done(self, seq: int) -> None:
        self._done.append(seq)
        self._wake.set()

    def failed(self, seq: int) -> None:
        self._failed.append(seq)
        self._wake.set()

    @property
    def size(self) -> int:
        """Bytes on disk plus bytes waiting for the next write."""
        return self.segment_bytes + len(self._buf)

    # -- flushing ---------------------------------------------------------------------------

    def _take(self) -> tuple[bytes, int]:
        if self._done:
            self._buf += records.seqs_record(records.DONE, self._done)
            self._done = []
        if self._failed:
            self._buf += records.seqs_record(records.FAILED, self._failed)
            self._failed = []
        data = bytes(self._buf)
        self._buf.clear()
        return data, self._appended

    def _write(self, data: bytes) -> None:
        """Blocking: append ``data`` durably, or leave the segment as it was and raise."""
        end = os.fstat(self._fd).st_size
        try:
            write_all(self._fd, data)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # no half record stays to be read as damage
                os.ftruncate(self._fd, end)
            raise

    async def _flush_once(self) -> None:
        data, high = self._take()
        if data:
            self.segment_bytes += len(data)  # counted from now: size must not dip mid-write
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._write, data)
            except OSError as exc:
                self.segment_bytes -= len(data)
                if exc.errno not in _NO_SPACE:
                    raise
                self._buf[:0] = data  # first again, for the next attempt
                self._no_space(exc)
                self._flushed.set()
                return
            self.writes += 1
            if self.error is not None:
                log.warning("journal %s writable again after %s", self.directory, self.error)
                self.error = self.error_since = None
        if high > self.durable:
            self.durable = high
            self._on_durable(high)
        self._flushed.set()

    def _no_space(self, exc: OSError) -> None:
        self.write_errors += 1
        reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if self.error != reason:
            log.error(
                "journal %s cannot be written (%s): nothing is acked until it can; "
                "retrying every %g s",
                self.directory,
                exc,
                RETRY_INTERVAL,
            )
            self.error = reason
            self.error_since = time.time()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._interval and not self._closing:
                await asyncio.sleep(self._interval)
            await self._flush_once()
            if self._closing:
                return
            if self.error is not None:
                # What fills the disk may be this journal's own finished events: a
                # compaction may free the room.
                now = time.monotonic()
                if now >= self._compact_retry_at:
                    self._compact_retry_at = now + COMPACT_RETRY_INTERVAL
                    await self.compact()
                await asyncio.sleep(RETRY_INTERVAL)
                self._wake.set()
            elif self._worth_compacting():
                await self.compact()

    def _worth_compacting(self) -> bool:
        """Past the size limit, and enough of the segment is garbage to pay for a rewrite.

        The rewrite copies the unfinished events, so it waits until the segment
        has doubled since the last one or half of the events that one copied
        have finished: a large backlog is not rewritten on every write.
        """
        pending = self._pending_count()
        limit = self._compact_bytes if pending else self._compact_bytes // 8
        return self.segment_bytes >= limit and (
            self.segment_bytes >= 2 * self._base_bytes or pending <= self._base_count // 2
        )

    async def sync(self) -> None:
        """Until everything appended so far is written and fsynced (and so acked).

        Returns early if the writer has failed or the disk is full (then nothing more is
        acked).
        """
        target = self._appended
        flusher = self._flusher
        while self.durable < target and flusher is not None and not flusher.done():
            if self.error is not None:
                return
            self._flushed.clear()
            self._wake.set()
            flushed = asyncio.create_task(self._flushed.wait())
            await asyncio.wait([flushed, flusher], return_when=asyncio.FIRST_COMPLETED)
            flushed.cancel()

    # -- compaction --------------------------------------------------------------------------

    def _start_segment(self, unfinished: list[Wire], high: int) -> None:
        """Blocking: write a new segment with ``unfinished``, switch to it, drop the old ones."""
        data = bytearray(records.high_record(high))
        for i in range(0, len(unfinished), SNAPSHOT_CHUNK):
            body = jsonexact.dumps(unfinished[i : i + SNAPSHOT_CHUNK])
            data += records.record(records.ACCEPTED, body)
        path = self.directory / _segment_name(self._generation + 1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            write_all(fd, bytes(data))
            os.fsync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):  # a part of a snapshot is not a segment
                path.unlink()
            raise
        self._generation += 1
        if self._fd >= 0:
            os.close(self._fd)
            self._old.append(self.directory / _segment_name(self._generation - 1))
        self._fd = fd
        self.segment_bytes = self._base_bytes = len(data)
        self._base_count = len(unfinished)
        for old in self._old:
            old.unlink(missing_ok=True)
        self._old = []

    async def compact(self) -> None:
        """Rewrite the journal as the unfinished events only (called by the flusher).

        Only those already written: the others are in the buffer, written next (on a
        full disk, what could not be written is no smaller in a snapshot)."""
        unfinished, high = self._snapshot()
        durable = self.durable
        unfinished = [w for w in unfinished if w[0] <= durable]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self._start_segment, unfinished, high)
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            # The current segment goes on; tried again once it has doubled (while the
            # disk stays full: every COMPACT_RETRY_INTERVAL).
            log.warning("journal %s: no room to compact (%s)", self.directory, exc)
            self._base_bytes = self.segment_bytes
            return
        self.compactions += 1
        log.debug("journal compacted to %d unfinished events", len(unfinished))

    # -- stop ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Write and fsync what is buffered, then release the file."""
        if self._flusher is not None:
            # Let the flusher finish what it is doing (a write, a compaction) and one more flush.
            self._closing = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._flusher
            self._flusher = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._pool.shutdown(wait=True)
