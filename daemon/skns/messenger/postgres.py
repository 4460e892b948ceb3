"""The store on PostgreSQL (psycopg 3, async, with a connection pool).

One batch is one transaction of four statements sent in a single pipeline
(one network round trip)::

    BEGIN
    LOCK TABLE messenger_messages IN EXCLUSIVE MODE
    <insert the batch, numbered after the newest row; return it and the rows before it>
    COMMIT

``EXCLUSIVE`` conflicts with itself and with every writer but not with
readers, so batches from all replicas (and any other writer) are serialised
from the lock to the commit: commit order is ``seq`` order. Under READ
COMMITTED each statement takes a fresh snapshot, so the insert, which runs
after the lock is granted, sees every batch committed before it: the next
``seq`` (newest + position in the batch), each sender's next count and the
history are read complete. Rows are never numbered from a sequence object,
so a rolled-back batch leaves no gap. ``created_at`` is ``clock_timestamp()``
taken under the lock, so it grows with ``seq``. The answer is read only after
COMMIT returned, with ``synchronous_commit`` forced on: a 200 is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .store import Committed, Post, Row, StoreUnavailable

log = logging.getLogger("skns.messenger.postgres")

TABLE = "messenger_messages"
# pg_advisory_xact_lock key that serialises schema creation across replicas
# starting at once (CREATE TABLE IF NOT EXISTS alone can still collide on the
# catalog's unique indexes).
SCHEMA_LOCK = 0x736B6E736D7367  # "sknsmsg"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    sender text NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL,
    sender_count bigint NOT NULL CHECK (sender_count > 0),
    UNIQUE (sender, sender_count)
)
"""

LOCK = f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE"

# Parameters: senders text[], texts text[], history - 1.
# The history subquery and the insert share the statement's snapshot, so the
# history holds only rows from before this batch.
INSERT = f"""
WITH batch AS (
    SELECT b.sender, b.text, b.ord
    FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS b(sender, text, ord)
), newest AS (
    SELECT coalesce(max(seq), 0) AS seq FROM {TABLE}
), counts AS (
    SELECT d.sender,
           coalesce((SELECT max(m.sender_count) FROM {TABLE} m WHERE m.sender = d.sender), 0)
               AS n
    FROM (SELECT DISTINCT sender FROM batch) d
), new AS (
    INSERT INTO {TABLE} (seq, sender, text, created_at, sender_count)
    SELECT newest.seq + b.ord, b.sender, b.text, clock_timestamp(),
           counts.n + row_number() OVER (PARTITION BY b.sender ORDER BY b.ord)
    FROM batch b CROSS JOIN newest JOIN counts ON counts.sender = b.sender
    ORDER BY b.ord
    RETURNING seq, sender, text, created_at, sender_count
)
SELECT * FROM (
    SELECT seq, sender, text, created_at, sender_count FROM {TABLE} ORDER BY seq DESC LIMIT %s
) AS previous
UNION ALL
SELECT * FROM new
"""

ROWS = f"SELECT seq, sender, text, created_at, sender_count FROM {TABLE} ORDER BY seq"

# Errors that mean "the database is not there (now)": the batch was not stored.
_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)


class PostgresStore:
    kind = "postgresql"

    def __init__(
        self, dsn: str, pool_size: int, timeout: float, reconnect_timeout: float = 10.0
    ) -> None:
        self._timeout = timeout
        self._schema_ready = False
        self._checking = False
        self._check_task: asyncio.Task[None] | None = None
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            open=False,
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            kwargs={"autocommit": True},
            configure=self._configure,
            name="messenger",
        )

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        # A 200 promises durability whatever the server's defaults say; UTC
        # timestamps; a hung statement becomes a 503 rather than a stuck request.
        ms = int(self._timeout * 1000)
        await conn.execute(
            "SELECT set_config('synchronous_commit', 'on', false),"
            " set_config('TimeZone', 'UTC', false),"
            " set_config('statement_timeout', %s, false)",
            (str(ms),),
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)
        try:
            await self._ensure_schema()
        except StoreUnavailable as exc:
            log.warning("database not available yet (%s); will retry on demand", exc)

    async def close(self) -> None:
        await self._pool.close()

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                await conn.execute(SCHEMA)
        except _UNAVAILABLE as exc:
            self._recheck()
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc
        self._schema_ready = True

    def _recheck(self) -> None:
        """After a failure, purge broken idle connections so the next batch gets a live one."""
        if self._checking or self._pool.closed:
            return
        self._checking = True

        async def check() -> None:
            try:
                await self._pool.check()
            except Exception:  # the check itself failing must not kill the replica
                log.debug("pool check failed", exc_info=True)
            finally:
                self._checking = False

        # Keep a reference until done (asyncio holds tasks weakly).
        self._check_task = asyncio.get_running_loop().create_task(check())

    async def commit(self, batch: Sequence[Post], history: int) -> Committed:
        await self._ensure_schema()
        senders = [p[0] for p in batch]
        texts = [p[1] for p in batch]
        try:
            async with self._pool.connection() as conn:
                try:
                    async with conn.pipeline() as pipeline:
                        await conn.execute("BEGIN")
                        await conn.execute(LOCK)
                        cur = await conn.execute(INSERT, (senders, texts, history - 1))
                        await conn.execute("COMMIT")
                        await pipeline.sync()
                        rows: list[Row] = await cur.fetchall()  # type: ignore[assignment]
                except BaseException:
                    # The pipeline stopped at the first error: the transaction is
                    # aborted, not committed. Roll back so the pooled connection is
                    # clean (a broken one is discarded by the pool anyway).
                    if not conn.closed and not conn.broken:
                        with contextlib.suppress(psycopg.Error):
                            await conn.rollback()
                    raise
        except _UNAVAILABLE as exc:
            self._recheck()
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc
        rows.sort()
        n = len(rows) - len(batch)
        return Committed(rows[:n], rows[n:])

    async def ping(self) -> None:
        await self._ensure_schema()
        try:
            async with self._pool.connection() as conn:
                await conn.execute("SELECT 1")
        except _UNAVAILABLE as exc:
            self._recheck()
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc

    async def rows(self) -> list[Row]:
        await self._ensure_schema()
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(ROWS)
                return await cur.fetchall()  # type: ignore[return-value]
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc
