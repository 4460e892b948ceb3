"""The store on PostgreSQL (psycopg 3, async, with a connection pool).

One batch is one statement, ``SELECT ... FROM messenger_post_v1(posts, n)``,
run in autocommit mode: one transaction, one network round trip. The
function (created with the table) first takes::

    LOCK TABLE messenger_messages IN EXCLUSIVE MODE

which conflicts with itself and with every writer but not with readers, so
batches from all replicas (and any other writer) are serialised from the lock
to the commit: commit order is ``seq`` order. The function is VOLATILE, so
under READ COMMITTED its next statement takes a fresh snapshot, after the lock
was granted: it sees every batch committed before, and reads the next ``seq``
(newest + position in the batch), each sender's next count and the history
complete. Rows are never numbered from a sequence object, so a rolled-back
batch leaves no gap. ``created_at`` is ``clock_timestamp()`` taken under the
lock, so it grows with ``seq``.

psycopg returns only once the server sent ReadyForQuery, which follows the
COMMIT (with ``synchronous_commit`` forced on, the WAL flush): a 200 is
durable. The posts travel as one JSON parameter and ``created_at`` comes back
as RFC 3339 text: both far cheaper for the replica than text arrays and
timestamps, which matters because the replica's CPU is the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .store import Committed, Post, Row, StoreUnavailable

log = logging.getLogger("skns.messenger.postgres")

TABLE = "messenger_messages"
# pg_advisory_xact_lock key that serialises schema creation across replicas
# starting at once (CREATE TABLE IF NOT EXISTS alone can still collide on the
# catalog's unique indexes).
SCHEMA_LOCK = 0x736B6E736D7367  # "sknsmsg"

FUNCTION_NAME = "messenger_post_v1"  # a new version gets a new name: old replicas keep theirs

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

# Runs the batch: a JSON array of [sender, text] pairs. Returns the batch's rows
# and the ``previous`` rows before them, in no particular order. The history
# query and the insert share one snapshot, so the history holds only rows from
# before this batch.
FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION_NAME}(posts json, previous integer)
RETURNS SETOF {TABLE}
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    LOCK TABLE {TABLE} IN EXCLUSIVE MODE;
    RETURN QUERY
    WITH batch AS (
        SELECT p->>0 AS sender, p->>1 AS text, ord
        FROM json_array_elements(posts) WITH ORDINALITY AS a(p, ord)
    ), newest AS (
        SELECT coalesce(max(m.seq), 0) AS seq FROM {TABLE} m
    ), counts AS (
        SELECT d.sender,
               coalesce(
                   (SELECT max(m.sender_count) FROM {TABLE} m WHERE m.sender = d.sender), 0
               ) AS n
        FROM (SELECT DISTINCT b.sender FROM batch b) d
    ), new AS (
        INSERT INTO {TABLE} AS m (seq, sender, text, created_at, sender_count)
        SELECT newest.seq + b.ord, b.sender, b.text, clock_timestamp(),
               counts.n + row_number() OVER (PARTITION BY b.sender ORDER BY b.ord)
        FROM batch b CROSS JOIN newest JOIN counts ON counts.sender = b.sender
        ORDER BY b.ord
        RETURNING m.*
    )
    SELECT * FROM (SELECT m.* FROM {TABLE} m ORDER BY m.seq DESC LIMIT previous) AS p
    UNION ALL
    SELECT * FROM new;
END
$$
"""

CREATED_AT = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
POST = f"SELECT seq, sender, text, {CREATED_AT}, sender_count FROM {FUNCTION_NAME}(%s, %s)"

ROWS = f"SELECT seq, sender, text, {CREATED_AT}, sender_count FROM {TABLE} ORDER BY seq"

# Errors that mean "the database is not there (now)": the batch was not stored.
_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)


class PostgresStore:
    kind = "postgresql"

    def __init__(
        self, dsn: str, pool_size: int, timeout: float, reconnect_timeout: float = 10.0
    ) -> None:
        self._timeout = timeout
        self._schema_ready = False
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
        # Whatever the server's defaults say: a 200 promises durability; READ
        # COMMITTED is what gives the statement after the lock a fresh snapshot
        # (under REPEATABLE READ it would see the data of before the lock wait);
        # a hung statement becomes a 503 rather than a stuck request.
        ms = int(self._timeout * 1000)
        await conn.execute(
            "SELECT set_config('synchronous_commit', 'on', false),"
            " set_config('default_transaction_isolation', 'read committed', false),"
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
        if self._check_task is not None:
            self._check_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check_task
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; the database being away becomes StoreUnavailable."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            self._recheck()
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc

    def _recheck(self) -> None:
        """After a failure, purge broken idle connections so the next batch gets a live one."""
        if self._pool.closed or (self._check_task is not None and not self._check_task.done()):
            return

        async def check() -> None:
            try:
                await self._pool.check()
            except Exception:  # the check itself failing must not kill the replica
                log.debug("pool check failed", exc_info=True)

        # Keep a reference until done (asyncio holds tasks weakly).
        self._check_task = asyncio.get_running_loop().create_task(check())

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(SCHEMA)
            await conn.execute(FUNCTION)
        self._schema_ready = True

    async def commit(self, batch: Sequence[Post], history: int) -> Committed:
        await self._ensure_schema()
        async with self._connection() as conn:
            cur = await conn.execute(POST, (orjson.dumps(batch).decode(), history - 1))
            rows: list[Row] = await cur.fetchall()  # type: ignore[assignment]
        rows.sort()
        n = len(rows) - len(batch)
        return Committed(rows[:n], rows[n:])

    async def ping(self) -> None:
        await self._ensure_schema()
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def rows(self) -> list[Row]:
        await self._ensure_schema()
        async with self._connection() as conn:
            cur = await conn.execute(ROWS)
            return await cur.fetchall()  # type: ignore[return-value]
