"""The throwaway PostgreSQL cluster (the tests' server is one, so it is exercised throughout)."""

from __future__ import annotations

from pathlib import Path

import psycopg

import pg
from skns.messenger.pgcluster import Cluster, create_database, find_bindir


def test_bindir_has_the_server(bindir: Path) -> None:
    assert bindir == find_bindir()
    assert (bindir / "postgres").exists()


def test_create_database_is_fresh_each_time(pg_server: pg.PgServer) -> None:
    pg_server.created.append("skns_fresh")  # dropped at the end of the session
    dsn = create_database(pg_server.dsn, "skns_fresh")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    dsn = create_database(pg_server.dsn, "skns_fresh")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)


def test_cluster_lifecycle_leaves_nothing_behind(bindir: Path) -> None:
    cluster = Cluster()
    with cluster:
        directory = cluster.dir
        assert directory is not None and cluster.postmaster_pid is not None
        cluster.stop()
        assert cluster.postmaster_pid is None
        cluster.start()
        with psycopg.connect(cluster.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert cluster.dir is None and not directory.exists()
