"""50 coroutines x 100 requests over two replica processes: the rules hold everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from skns.messenger.load import NAMES, Load
from skns.messenger.local import LocalReplicas
from skns.messenger.replica import stored_rows
from skns.messenger.rules import Message, check


def load_and_check(replicas: LocalReplicas) -> None:
    load = Load(replicas.urls, coroutines=50, requests=100, seed=6)
    result = uvloop.run(load.run())
    assert not result.errors
    assert result.ok == load.done == 5000
    answers = result.answers()
    table = [Message.from_row(r) for r in asyncio.run(stored_rows(replicas.settings))]
    verdict = check(answers, table)
    assert verdict.ok, {r: verdict.examples[r] for r in verdict.broken()}
    assert verdict.rows == 5000
    # The load was spread: both replicas, all ten senders, batches shared.
    assert {a.sender for a in answers} == set(NAMES)
    assert len({m.sender_count for m in table}) > 100
    assert all(len(a.messages) == 10 for a in answers if a.messages[-1].seq >= 10)


def test_postgresql(pg_dsn: str, start_replicas: Callable[..., LocalReplicas]) -> None:
    load_and_check(start_replicas(dsn=pg_dsn))


def test_sqlite(start_replicas: Callable[..., LocalReplicas]) -> None:
    load_and_check(start_replicas())


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_without_batching(
    store: str, start_replicas: Callable[..., LocalReplicas], request: pytest.FixtureRequest
) -> None:
    """One transaction per request (the benchmark's baseline) keeps the rules as well."""
    dsn = request.getfixturevalue("pg_dsn") if store == "postgresql" else ""
    replicas = start_replicas(dsn=dsn, batching=False)
    load = Load(replicas.urls, coroutines=20, requests=20, seed=7)
    result = uvloop.run(load.run())
    assert not result.errors
    table = [Message.from_row(r) for r in asyncio.run(stored_rows(replicas.settings))]
    verdict = check(result.answers(), table)
    assert verdict.ok, {r: verdict.examples[r] for r in verdict.broken()}
