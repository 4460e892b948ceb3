"""PostgreSQL for tests: one server per test session, a fresh database per test.

The server is ``$SKNS_TEST_PG_DSN`` when set, else a throwaway cluster from
:mod:`skns.messenger.pgcluster` (the benchmark's runtime code: one
implementation for both). Starting a cluster costs about a second, so a
session shares one; tests that must stop and restart the server need the
throwaway cluster (``server.cluster``) and skip without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator

import psycopg
from psycopg import sql

from skns.messenger.pgcluster import ENV_DSN, Cluster, ClusterError, create_database, find_bindir

_names = itertools.count()


@dataclasses.dataclass
class PgServer:
    dsn: str  # a superuser's DSN on the maintenance database
    cluster: Cluster | None  # None when the server is $SKNS_TEST_PG_DSN's
    created: list[str] = dataclasses.field(default_factory=list)

    def database(self, prefix: str = "skns_test") -> str:
        """A new, empty database; returns its DSN."""
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        self.created.append(name)
        return create_database(self.dsn, name)

    def drop_created(self) -> None:
        """Drop the databases made here (a server of someone else's is left as found)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for name in self.created:
                query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(query.format(sql.Identifier(name)))
        self.created.clear()


def available() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if os.environ.get(ENV_DSN):
        return None
    try:
        find_bindir()
    except ClusterError as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        server = PgServer(dsn, None)
        try:
            yield server
        finally:
            server.drop_created()
        return
    with Cluster() as cluster:
        yield PgServer(cluster.dsn, cluster)
