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

from skns.messenger.pgcluster import ENV_DSN, Cluster, ClusterError, create_database, find_bindir

_names = itertools.count()


@dataclasses.dataclass
class PgServer:
    dsn: str  # a superuser's DSN on the maintenance database
    cluster: Cluster | None  # None when the server is $SKNS_TEST_PG_DSN's

    def database(self, prefix: str = "test") -> str:
        """A new, empty database; returns its DSN."""
        return create_database(self.dsn, f"{prefix}_{os.getpid()}_{next(_names)}")


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
        yield PgServer(dsn, None)
        return
    with Cluster() as cluster:
        yield PgServer(cluster.dsn, cluster)
