"""A replica process: the target of each messenger child the supervisor forks."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .server import Replica, serve
from .store import Row, Store, StoreUnavailable

if TYPE_CHECKING:
    from ..child import ChildContext
    from ..config import Settings

log = logging.getLogger("skns.messenger.replica")

SQLITE_FILE = "messenger.sqlite3"  # in [service] state_dir


def make_store(settings: Settings) -> Store:
    """PostgreSQL when a DSN is configured, else SQLite in the state directory."""
    m = settings.messenger
    if m.dsn:
        from .postgres import PostgresStore

        return PostgresStore(m.dsn, m.pool_size, m.db_timeout, m.reconnect_timeout)
    from .sqlite import SqliteStore

    return SqliteStore(settings.service.state_dir / SQLITE_FILE, m.db_timeout)


async def stored_rows(settings: Settings) -> list[Row]:
    """Every row the configured database holds, by seq (for the checks of tests and bench)."""
    store = make_store(settings)
    await store.open()
    try:
        return await store.rows()
    finally:
        await store.close()


def run(ctx: ChildContext) -> None:
    """Serve ``listen[index]`` until SIGTERM (``ChildSpec.target``)."""
    m = ctx.settings.messenger
    address = m.listen[ctx.spec.index]
    store = make_store(ctx.settings)
    replica = Replica(
        store,
        m.sender_max,
        m.text_max,
        m.batching,
        m.batch_max,
        m.batch_delay_ms / 1000,
        m.request_timeout,
        m.max_connections,
    )

    async def main(stop: asyncio.Event) -> None:
        try:
            await store.open()
        except StoreUnavailable as exc:  # served as 503 until the database is back
            log.warning("database not available at start: %s", exc)
        try:
            # A request in flight waits at most db_timeout for the database.
            await serve(
                replica,
                address.host,
                address.port,
                stop,
                grace=m.db_timeout + 1.0,
                ready=ctx.ready,
                listener=ctx.listener,
            )
        finally:
            await store.close()

    ctx.serve(main, replica.stats)
