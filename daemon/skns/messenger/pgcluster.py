"""A throwaway PostgreSQL cluster for the benchmark and the tests.

No server runs on the machines this is built on (nor in CI), but the server
binaries are installed: :class:`Cluster` runs ``initdb`` into a temporary
directory, starts ``postgres`` on a free loopback port with its socket in that
directory, and removes everything when stopped. PostgreSQL refuses to run as
root, so as root the directory is handed to the ``postgres`` user and the
commands run through ``runuser``.

``fsync`` stays on: the figures measured against this cluster are durable
commits, like the service's.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import SknsError
from ..ports import free_port

log = logging.getLogger("skns.messenger.pgcluster")

ENV_DSN = "SKNS_TEST_PG_DSN"


class ClusterError(SknsError):
    """The throwaway cluster could not be created, started or stopped."""


def find_bindir() -> Path:
    """The newest installed PostgreSQL server's ``bin`` directory."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ClusterError("no PostgreSQL server binaries (initdb) found; install postgresql")


class Cluster:
    """One private PostgreSQL server; ``start()`` then ``stop()`` (or use ``with``)."""

    def __init__(self, bindir: Path | None = None, port: int | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.port = port or free_port()
        self.dir: Path | None = None
        self._user: str | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def postmaster_pid(self) -> int | None:
        """The server's main process id while it runs (first line of postmaster.pid)."""
        if self.dir is None:
            return None
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{args[0]} failed: {exc}") from None
        if proc.returncode != 0:
            raise ClusterError(f"{args[0]} exited {proc.returncode}: {proc.stderr.strip()}")

    def create(self) -> None:
        """Make the directory and run initdb (done once; start/stop may repeat)."""
        self.dir = Path(tempfile.mkdtemp(prefix="skns-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError("running as root and there is no 'postgres' user") from None
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._user = "postgres"
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale", "C")  # fmt: skip

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        if self.dir is None:
            self.create()
        assert self.dir is not None
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
            " -c synchronous_commit=on -c max_connections=200 -c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        log.debug("PostgreSQL up on port %d in %s", self.port, self.dir)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; the data stays. ``fast`` rolls open transactions back and says
        goodbye to clients; ``immediate`` drops everything at once, like a crash."""
        if self.dir is not None:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete everything it had."""
        if self.dir is None:
            return
        with contextlib.suppress(ClusterError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def create_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn`` (afresh) and return its DSN."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A server DSN to work on: ``$SKNS_TEST_PG_DSN`` if set, else a throwaway cluster's.

    Callers make a database of their own on it (:func:`create_database`).
    """
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        yield dsn
        return
    with Cluster() as cluster:
        yield cluster.dsn
