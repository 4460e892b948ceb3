"""Partition of an account, and the balanced assignment of partitions to hosts and shards."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from skns.executor.placement import assign, host_partitions, partition_of, shard_partitions


def test_partition_is_crc32_of_the_typed_account() -> None:
    # Fixed values: every process of every host must compute the same partition.
    assert partition_of(5, 64) == zlib.crc32(b"i:5") % 64
    assert partition_of("5", 64) == zlib.crc32(b"s:5") % 64
    assert partition_of(5, 64) != partition_of("5", 64)
    assert all(0 <= partition_of(a, 7) < 7 for a in range(1000))


@pytest.mark.parametrize(("items", "bins"), [(64, 1), (64, 2), (64, 3), (64, 5), (7, 3), (3, 5)])
def test_balanced_within_one(items: int, bins: int) -> None:
    names = [f"h{i}" for i in range(bins)]
    placed = assign(range(items), names)
    assert sorted(placed) == list(range(items))
    counts = Counter(placed.values())
    sizes = [counts.get(n, 0) for n in names]
    assert max(sizes) - min(sizes) <= 1


def test_same_answer_whatever_the_order_of_the_hosts() -> None:
    assert assign(range(64), ["b", "a", "c"]) == assign(range(64), ["c", "b", "a"])
    assert assign(range(8), []) == {}


def test_a_host_joining_moves_about_its_share() -> None:
    before = assign(range(64), ["a", "b"])
    after = assign(range(64), ["a", "b", "c"])
    moved = sum(before[p] != after[p] for p in range(64))
    # c's share is 21 or 22 partitions; round robin (p % n) would move 42 of 64.
    assert sum(owner == "c" for owner in after.values()) in (21, 22)
    assert moved <= 32


def test_a_host_leaving_moves_only_its_partitions_onto_the_others() -> None:
    before = assign(range(64), ["a", "b", "c"])
    after = assign(range(64), ["a", "b"])
    stayed = [p for p in range(64) if before[p] != "c"]
    assert sum(before[p] == after[p] for p in stayed) >= len(stayed) - 10


def test_host_and_shard_split() -> None:
    hosts = ["a", "b"]
    mine = host_partitions(64, hosts, "a")
    theirs = host_partitions(64, hosts, "b")
    assert sorted(mine + theirs) == list(range(64))
    assert host_partitions(64, hosts, "z") == []
    shares = [shard_partitions(mine, 3, i) for i in range(3)]
    assert sorted(p for share in shares for p in share) == mine
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
