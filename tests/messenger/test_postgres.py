"""The PostgreSQL store against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psycopg
import pytest

from skns.messenger.postgres import HUNG_GRACE, PostgresStore
from skns.messenger.rules import Message, check
from skns.messenger.store import StoreTimeout, StoreUnavailable
from skns.ports import free_port

from .aio import run_async


def store(dsn: str, pool_size: int = 2, timeout: float = 5.0) -> PostgresStore:
    return PostgresStore(dsn, pool_size, timeout, reconnect_timeout=2.0)


@run_async
async def test_numbering_counts_and_history(pg_dsn: str) -> None:
    s = store(pg_dsn)
    await s.open()
    try:
        first = await s.commit([("ann", "a1"), ("bob", "b1"), ("ann", "a2")], history=10)
        assert first.previous == []
        assert [(r[0], r[1], r[2], r[4]) for r in first.new] == [
            (1, "ann", "a1", 1),
            (2, "bob", "b1", 1),
            (3, "ann", "a2", 2),
        ]
        batch = [("bob", f"b{i}") for i in range(2, 13)]
        second = await s.commit(batch, history=10)
        assert [r[0] for r in second.previous] == [1, 2, 3]
        assert [r[0] for r in second.new] == list(range(4, 15))
        assert [r[4] for r in second.new] == list(range(2, 13))
        third = await s.commit([("cid", "c1")], history=4)
        assert [r[0] for r in third.previous] == [12, 13, 14]  # history - 1 rows before
        stamps = [r[3] for r in await s.rows()]
        assert stamps == sorted(stamps)  # created_at grows with seq
        assert all(t.endswith("Z") and "T" in t for t in stamps)
    finally:
        await s.close()


@run_async
async def test_replicas_starting_at_once_create_the_schema_once(pg_dsn: str) -> None:
    stores = [store(pg_dsn, pool_size=1) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        results = await asyncio.gather(*(s.commit([("ann", "x")], 10) for s in stores))
        assert sorted(r.new[0][0] for r in results) == [1, 2, 3, 4, 5, 6]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@run_async
async def test_concurrent_writers_keep_the_rules(pg_dsn: str) -> None:
    """Four stores (separate connections, as separate replicas) write batches at once."""
    stores = [store(pg_dsn) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    seen: list[Message] = []

    async def writer(k: int, s: PostgresStore) -> None:
        for i in range(25):
            batch = [(f"s{(k + j) % 3}", f"w{k} {i}.{j}") for j in range(1 + i % 4)]
            committed = await s.commit(batch, 10)
            seen.extend(Message.from_row(r) for r in committed.previous + committed.new)

    try:
        await asyncio.gather(*(writer(k, s) for k, s in enumerate(stores)))
        table = [Message.from_row(r) for r in await stores[0].rows()]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert len(table) == 4 * sum(1 + i % 4 for i in range(25))
    verdict = check([], table)
    assert verdict.ok, verdict.examples
    by_seq = {m.seq: m for m in table}
    assert all(by_seq[m.seq] == m for m in seen)  # what each writer read is what was stored


@run_async
async def test_unreachable_database_is_unavailable_not_fatal() -> None:
    s = store(f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=1", timeout=0.5)
    await s.open()  # does not raise: the replica starts and answers 503
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await s.commit([("ann", "x")], 10)
        with pytest.raises(StoreUnavailable):
            await s.ping()
        assert time.monotonic() - started < 5
        # Known to be down: refused without waiting for the pool's timeout again.
        assert s.down
        started = time.monotonic()
        for _ in range(10):
            with pytest.raises(StoreUnavailable, match="database down"):
                await s.commit([("ann", "x")], 10)
            with pytest.raises(StoreUnavailable, match="database down"):
                await s.ping()
        assert time.monotonic() - started < 0.4  # 20 x 0.5 s without the circuit
    finally:
        await s.close()


@run_async
async def test_session_settings_hold_whatever_the_database_defaults(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
        conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_isolation = serializable')
    s = store(pg_dsn, pool_size=1)
    await s.open()
    try:
        async with s._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT current_setting('synchronous_commit'),"
                " current_setting('transaction_isolation')"
            )
            assert await cur.fetchone() == ("on", "read committed")
        await s.commit([("ann", "x")], 10)
    finally:
        await s.close()


@run_async
async def test_a_statement_timeout_fails_its_batch_but_does_not_open_the_circuit(
    pg_dsn: str,
) -> None:
    s = store(pg_dsn, pool_size=1, timeout=0.5)
    await s.open()
    try:
        await s.commit([("ann", "before")], 10)
        with psycopg.connect(pg_dsn) as blocker:  # holds the lock until the block ends
            blocker.execute("LOCK TABLE messenger_messages IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                await s.commit([("ann", "blocked")], 10)
            assert not s.down  # a slow database, not a gone one
            await asyncio.sleep(1.0)
        committed = await s.commit([("ann", "after")], 10)  # at once, no probe needed
        assert [row[2] for row in committed.new] == ["after"]
    finally:
        await s.close()


@run_async
async def test_a_frozen_server_gets_a_503_within_the_timeout_not_a_hang(pg_dsn: str) -> None:
    """statement_timeout cannot fire in a server that does not run: the replica gives
    up after db_timeout + HUNG_GRACE, says the batch may have been stored, opens the
    circuit, and serves again once the server answers."""
    s = store(pg_dsn, pool_size=1, timeout=0.5)
    await s.open()
    backend = None
    try:
        await s.commit([("ann", "before")], 10)
        async with s._pool.connection() as conn:
            backend = conn.info.backend_pid
        os.kill(backend, signal.SIGSTOP)  # this connection's server process, frozen
        started = time.monotonic()
        with pytest.raises(StoreTimeout, match="no answer within"):
            await s.commit([("ann", "frozen")], 10)
        assert time.monotonic() - started < 0.5 + HUNG_GRACE + 1.0
        assert s.down
        os.kill(backend, signal.SIGCONT)
        backend = None
        deadline = time.monotonic() + 15
        while True:  # the abandoned statement is cancelled, the pool heals
            try:
                committed = await s.commit([("ann", "after")], 10)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        texts = [row[2] for row in (await s.rows())]
        assert texts[0] == "before" and texts[-1] == "after" and texts.count("frozen") <= 1
        assert committed.new[0][0] == len(texts)
    finally:
        if backend is not None:
            os.kill(backend, signal.SIGCONT)
        await s.close()
