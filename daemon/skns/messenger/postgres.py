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

While the database is down, requests must not each wait ``db_timeout`` for a
connection the pool cannot make: the first failure that says the server is
gone (the pool timing out, a connection refused or broken) opens a circuit,
and from then on every request and health check gets :class:`StoreUnavailable`
(a 503) at once. A background probe connects afresh every
:data:`PROBE_INTERVAL` seconds; once one succeeds, the pool drops its broken
idle connections and the circuit closes. A statement cancelled by
``statement_timeout`` is a slow database, not a gone one: it does not open it
(:func:`_server_gone`).

``statement_timeout`` is enforced by the server, which cannot enforce it when it
does not run (stopped, frozen, cut off by a partition with the connection still
open): a statement left without an answer ``db_timeout`` + :data:`HUNG_GRACE`
seconds after it got its connection fails its batch with :class:`StoreTimeout`
(a 503 that cannot say whether the batch was stored: it was sent) and opens the
circuit. The abandoned statement is cancelled in the background (psycopg asks the
server to cancel it, and drops the connection when that goes unanswered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .store import Committed, Post, Row, StoreTimeout, StoreUnavailable

T = TypeVar("T")

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
# SQLSTATEs of a server going or gone: shutting down (admin, crash), not accepting connections.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
# Seconds between two reconnect attempts while the circuit is open.
PROBE_INTERVAL = 0.5
# Seconds past db_timeout a statement may go unanswered before the server counts as hung:
# its own statement_timeout answers first while it runs.
HUNG_GRACE = 1.0


def _server_gone(exc: Exception) -> bool:
    """Does ``exc`` say the server is away, rather than that one statement failed on it?

    No connection within the timeout, an error raised on our side of a connection (no
    SQLSTATE: refused, reset, closed), a connection exception (class 08) or a shutdown.
    A statement cancelled by statement_timeout (57014) or a transaction rolled back by the
    server (class 40) come from a live server: they fail their batch and nothing more."""
    if isinstance(exc, PoolTimeout):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_GONE


class PostgresStore:
    kind = "postgresql"

    def __init__(
        self, dsn: str, pool_size: int, timeout: float, reconnect_timeout: float = 10.0
    ) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._schema_ready = False
        # The circuit: open (the database is known to be down) since this monotonic time.
        self._down_since: float | None = None
        self._down_reason = ""
        self._probe_task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[object]] = set()  # statements given up on, cancelling
        self.outages = 0  # times the circuit opened
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
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self._abandoned:  # their connections go back to the pool when done
            await asyncio.wait(self._abandoned, timeout=self._timeout)
        await self._pool.close()

    @property
    def down(self) -> bool:
        """True while the circuit is open: requests get StoreUnavailable without waiting."""
        return self._down_since is not None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; the database being away becomes StoreUnavailable."""
        if self._down_since is not None:
            raise StoreUnavailable(f"database down: {self._down_reason}")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            reason = str(exc).strip() or type(exc).__name__
            if _server_gone(exc):
                self._open_circuit(reason)
            raise StoreUnavailable(reason) from exc

    async def _run(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection, answered within ``db_timeout`` + HUNG_GRACE
        seconds of getting the connection (getting it is bounded by the pool's timeout),
        or StoreTimeout. ``work`` runs in a task of its own so that giving up on it
        does not wait for its cancellation, which waits on the server."""
        connected = asyncio.Event()

        async def attempt() -> T:
            async with self._connection() as conn:
                connected.set()
                return await work(conn)

        task = asyncio.ensure_future(attempt())
        waiter = asyncio.ensure_future(connected.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait((task,), timeout=self._timeout + HUNG_GRACE)
        except BaseException:  # cancelled: the replica is stopping
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
        reason = f"no answer within {self._timeout + HUNG_GRACE:g} s"
        self._open_circuit(reason)
        raise StoreTimeout(reason)

    def _open_circuit(self, reason: str) -> None:
        self._down_reason = reason.splitlines()[0][:200]
        if self._down_since is not None or self._pool.closed:
            return
        self._down_since = time.monotonic()
        self.outages += 1
        log.warning("database down (%s): answering 503 until it is back", self._down_reason)
        # Keep a reference until done (asyncio holds tasks weakly).
        self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Connect afresh until the database answers, then close the circuit."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(self._timeout):
                    conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                    async with conn:
                        await conn.execute("SELECT 1")
                    # Drop the idle connections that died with the server.
                    await self._pool.check()
            except (psycopg.Error, PoolTimeout, TimeoutError, OSError) as exc:
                self._down_reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
                continue
            break
        assert self._down_since is not None
        log.warning("database back after %.1f s", time.monotonic() - self._down_since)
        self._down_since = None

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return

        async def create(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                await conn.execute(SCHEMA)
                await conn.execute(FUNCTION)

        await self._run(create)
        self._schema_ready = True

    async def commit(self, batch: Sequence[Post], history: int) -> Committed:
        await self._ensure_schema()
        rows = await self._run(_fetch(POST, (orjson.dumps(batch).decode(), history - 1)))
        rows.sort()
        n = len(rows) - len(batch)
        return Committed(rows[:n], rows[n:])

    async def ping(self) -> None:
        await self._ensure_schema()
        await self._run(_fetch("SELECT 1"))

    async def rows(self) -> list[Row]:
        await self._ensure_schema()
        return await self._run(_fetch(ROWS))


def _fetch(
    query: str, params: tuple[object, ...] = ()
) -> Callable[[psycopg.AsyncConnection], Awaitable[list[Row]]]:
    async def fetch(conn: psycopg.AsyncConnection) -> list[Row]:
        cur = await conn.execute(query, params)
        return await cur.fetchall()  # type: ignore[return-value]

    return fetch
