from collections import Counter

import pytest

from skns.executor.ring import Ring, account_key

ACCOUNTS = [*range(20_000), *(f"user-{i}" for i in range(5_000))]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_adding_a_shard_moves_about_one_in_k_plus_one(k: int) -> None:
    before, after = Ring(k), Ring(k + 1)
    moved = [a for a in ACCOUNTS if before.shard_of(a) != after.shard_of(a)]
    # Only the new shard takes accounts: none moves between the old ones ...
    assert all(after.shard_of(a) == k for a in moved)
    # ... and it takes about its fair share, 1/(K+1).
    share = len(moved) / len(ACCOUNTS)
    assert abs(share - 1 / (k + 1)) < 0.25 / (k + 1), share


@pytest.mark.parametrize("k", [2, 3, 7])
def test_accounts_spread_evenly(k: int) -> None:
    ring = Ring(k)
    counts = Counter(ring.shard_of(a) for a in ACCOUNTS)
    assert set(counts) == set(range(k))
    for n in counts.values():
        assert abs(n / len(ACCOUNTS) - 1 / k) < 0.2 / k


def test_mapping_is_stable_across_instances_and_cache() -> None:
    a, b = Ring(4), Ring(4)
    first = [a.shard_of(x) for x in ACCOUNTS[:1000]]
    assert first == [b.shard_of(x) for x in ACCOUNTS[:1000]]
    assert first == [a.shard_of(x) for x in ACCOUNTS[:1000]]  # now from the cache


def test_int_and_str_accounts_are_different_keys() -> None:
    assert account_key(5) != account_key("5")
    ring = Ring(16)
    assert any(ring.shard_of(i) != ring.shard_of(str(i)) for i in range(100))


def test_one_shard_takes_everything() -> None:
    ring = Ring(1)
    assert {ring.shard_of(a) for a in ACCOUNTS[:500]} == {0}


def test_rejects_empty_ring() -> None:
    with pytest.raises(ValueError):
        Ring(0)
    with pytest.raises(ValueError):
        Ring(2, vnodes=0)
