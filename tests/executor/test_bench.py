from collections import Counter

import pytest

from skns.executor import bench


def test_small_run_passes_its_checks(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--events", "300", "--accounts", "30", "--duration", "0.02", "--fast-events", "3000"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "lower bound" in out
    assert "one consumer/shard" in out
    assert "events/s" in out
    assert out.count(": OK:") == 2


def test_one_consumer_per_shard_baseline() -> None:
    counts = Counter({i: 10 for i in range(100)})
    # One shard runs everything one by one; more shards split the sum.
    assert bench.one_consumer_per_shard(counts, 1, 1.0) == 1000.0
    assert 500.0 <= bench.one_consumer_per_shard(counts, 2, 1.0) < 1000.0


def test_account_choice() -> None:
    import random

    uniform = Counter(bench.choose_accounts(10_000, 10, 0.0, random.Random(1)))
    skewed = Counter(bench.choose_accounts(10_000, 10, 1.2, random.Random(1)))
    assert max(uniform.values()) < 1200
    assert skewed[0] > 3 * skewed[9]
