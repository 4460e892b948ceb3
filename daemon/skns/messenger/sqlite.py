"""The store on an embedded SQLite database (used when no DSN is set).

Same rules as on PostgreSQL, by SQLite's own lock: ``BEGIN IMMEDIATE`` takes
the database's single write lock before anything is read, and holds it to the
COMMIT, so batches from every replica process are serialised and each reads
the newest ``seq``, the sender counts and the history complete. WAL journal
with ``synchronous=FULL``: a COMMIT that returned is on disk, so a 200 is
durable. The sqlite3 module blocks, so each replica runs its connection in one
worker thread; the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .store import Committed, Post, Row, StoreUnavailable

TABLE = "messenger_messages"

T = TypeVar("T")

# Between two tries of the set-up when SQLite answered busy at once (see _connect).
SETUP_PAUSE = 0.01

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq INTEGER PRIMARY KEY CHECK (seq > 0),
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sender_count INTEGER NOT NULL CHECK (sender_count > 0),
    UNIQUE (sender, sender_count)
)
"""


def _now() -> str:
    # The same RFC 3339 form as the PostgreSQL store's.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _busy(exc: BaseException) -> bool:
    """SQLITE_BUSY ("database is locked"), whatever its extended code."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    )


class SqliteStore:
    kind = "sqlite"
    down = False  # a local file: nothing to reconnect to

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self._timeout = timeout
        # One thread owns the connection: sqlite3 objects stay in the thread
        # that made them, and the replica never needs two writers of its own.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="messenger-sqlite")
        self._con: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, ...
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    def _connect(self) -> None:
        """Open the connection, in WAL mode, with the table.

        Turning a file to WAL takes its write lock by upgrading a read, and SQLite does not
        call the busy handler for that step (two upgrading readers would wait on each
        other), so ``timeout`` does not cover it: a replica starting while another turns
        the file to WAL got "database is locked" at once. The set-up, every step of it
        idempotent, is tried again on a new connection after a short pause until
        ``timeout`` has passed; a lock still held then is the error it was."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self._timeout
        while True:
            con = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=True
            )
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
                # Taken under the write lock, so replicas starting at once do not collide.
                con.execute("BEGIN IMMEDIATE")
                con.execute(SCHEMA)
                con.execute("COMMIT")
            except BaseException as exc:
                con.close()  # rolls back what it held
                if not (_busy(exc) and time.monotonic() < deadline):
                    raise  # open() is tried again by the next request
                time.sleep(SETUP_PAUSE)
                continue
            self._con = con
            return

    async def open(self) -> None:
        await self._call(self._connect)

    async def close(self) -> None:
        def close() -> None:
            if self._con is not None:
                self._con.close()
                self._con = None

        await self._call(close)
        self._executor.shutdown(wait=True)

    def _commit(self, batch: Sequence[Post], history: int) -> Committed:
        con = self._con
        assert con is not None
        con.execute("BEGIN IMMEDIATE")
        try:
            (newest,) = con.execute(f"SELECT coalesce(max(seq), 0) FROM {TABLE}").fetchone()
            previous: list[Row] = con.execute(
                f"SELECT seq, sender, text, created_at, sender_count FROM {TABLE}"
                " ORDER BY seq DESC LIMIT ?",
                (history - 1,),
            ).fetchall()
            counts: dict[str, int] = {}
            new: list[Row] = []
            for seq, (sender, text) in enumerate(batch, newest + 1):
                count = counts.get(sender)
                if count is None:
                    (count,) = con.execute(
                        f"SELECT coalesce(max(sender_count), 0) FROM {TABLE} WHERE sender = ?",
                        (sender,),
                    ).fetchone()
                counts[sender] = count = count + 1
                new.append((seq, sender, text, _now(), count))
            con.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?)", new)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        previous.reverse()
        return Committed(previous, new)

    async def commit(self, batch: Sequence[Post], history: int) -> Committed:
        if self._con is None:
            await self.open()
        return await self._call(self._commit, batch, history)

    async def ping(self) -> None:
        if self._con is None:
            await self.open()

    async def rows(self) -> list[Row]:
        def rows() -> list[Row]:
            assert self._con is not None
            return self._con.execute(
                f"SELECT seq, sender, text, created_at, sender_count FROM {TABLE} ORDER BY seq"
            ).fetchall()

        if self._con is None:
            await self.open()
        return await self._call(rows)
