"""skns-ctl bench messenger: against running replicas, and the full benchmark (small)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from skns.messenger import bench
from skns.messenger.local import LocalReplicas
from skns.ports import free_port


def test_against_running_replicas_with_the_table(
    pg_dsn: str, start_replicas: Callable[..., LocalReplicas], capsys: pytest.CaptureFixture[str]
) -> None:
    replicas = start_replicas(dsn=pg_dsn)
    urls = [arg for url in replicas.urls for arg in ("--url", url)]
    assert bench.main([*urls, "--dsn", pg_dsn, "-c", "10", "-n", "20", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert "| load " in out.out and "all hold (answers + table)" in out.out
    assert "| 200 " in out.out  # requests
    assert "200/200" in out.err  # the progress bar reached the end


def test_errors_fail_the_run(
    start_replicas: Callable[..., LocalReplicas], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=1"
    replicas = start_replicas(dsn=dsn, replicas=1, healthy=False, db_timeout=0.2)
    assert bench.main(["--url", replicas.urls[0], "-c", "2", "-n", "2"]) == 1
    assert "HTTP 503" in capsys.readouterr().out


def test_full_benchmark_small(bindir: object, capsys: pytest.CaptureFixture[str]) -> None:
    """Starts its own PostgreSQL and replicas, runs both modes, prints the comparison."""
    assert bench.main(["-c", "5", "-n", "20", "--warmup", "20"]) == 0
    out = capsys.readouterr().out
    assert "| group commit " in out and "| one transaction per request " in out
    assert out.count("all hold (answers + table)") == 2
    assert "ratio over one transaction per request:" in out
    assert "CPU during the run" in out
