"""Fixtures of the messenger tests: PostgreSQL and replica processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pg
from skns.messenger.local import LocalReplicas, local_settings
from skns.messenger.pgcluster import ClusterError, find_bindir


@pytest.fixture(scope="session")
def bindir() -> Path:
    """The PostgreSQL server binaries (tests that start clusters of their own need them)."""
    try:
        return find_bindir()
    except ClusterError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer]:
    reason = pg.available()
    if reason:
        pytest.skip(f"no PostgreSQL: {reason}")
    with pg.pg_server() as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server: pg.PgServer) -> str:
    """A fresh database of its own for the test."""
    return pg_server.database()


@pytest.fixture
def start_replicas(tmp_path: Path) -> Iterator[Callable[..., LocalReplicas]]:
    """``start_replicas(dsn="", replicas=2, healthy=True, **messenger_keys)``: replica
    processes on free ports (SQLite in the test's temp dir without a DSN), up and,
    with ``healthy``, answering /healthz with 200."""
    started: list[LocalReplicas] = []

    def start(dsn: str = "", replicas: int = 2, healthy: bool = True, **keys: Any) -> LocalReplicas:
        settings = local_settings(tmp_path / "state", dsn=dsn, replicas=replicas, **keys)
        group = LocalReplicas(settings)
        started.append(group)
        group.start(timeout=30, healthy=healthy)
        return group

    yield start
    for group in started:
        group.stop()
