"""The SQLite store (used when no DSN is set)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from skns.messenger.rules import Message, check
from skns.messenger.sqlite import SqliteStore
from skns.messenger.store import StoreUnavailable

from .aio import run_async


@run_async
async def test_numbering_counts_history_and_durability_settings(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state" / "m.sqlite3", timeout=5.0)
    await s.open()
    try:
        first = await s.commit([("ann", "a1"), ("bob", "b1"), ("ann", "a2")], history=10)
        assert first.previous == []
        assert [(r[0], r[1], r[4]) for r in first.new] == [
            (1, "ann", 1),
            (2, "bob", 1),
            (3, "ann", 2),
        ]
        second = await s.commit([("ann", f"x{i}") for i in range(10)], history=3)
        assert [r[0] for r in second.previous] == [2, 3]
        assert [r[4] for r in second.new] == list(range(3, 13))
        rows = await s.rows()
        assert [r[0] for r in rows] == list(range(1, 14))
        assert all(r[3].endswith("Z") for r in rows)
    finally:
        await s.close()
    con = sqlite3.connect(tmp_path / "state" / "m.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


@run_async
async def test_two_writers_keep_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    stores = [SqliteStore(path, timeout=10.0) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))

    async def writer(k: int, s: SqliteStore) -> None:
        for i in range(30):
            await s.commit([(f"s{(k + j) % 2}", f"{k}.{i}.{j}") for j in range(1 + i % 3)], 10)

    try:
        await asyncio.gather(*(writer(k, s) for k, s in enumerate(stores)))
        table = [Message.from_row(r) for r in await stores[0].rows()]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert len(table) == 3 * sum(1 + i % 3 for i in range(30))
    verdict = check([], table)
    assert verdict.ok, verdict.examples


@run_async
async def test_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    s = SqliteStore(path, timeout=0.2)
    await s.open()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await s.commit([("ann", "x")], 10)
        holder.execute("ROLLBACK")
        committed = await s.commit([("ann", "y")], 10)
        assert [r[0] for r in committed.new] == [1]  # the failed one left nothing behind
    finally:
        holder.close()
        await s.close()
