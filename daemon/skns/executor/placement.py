"""Cluster mode: which partition an account is in, and who runs which partition.

Pure functions, computed alike by every process of every host from the same
inputs (the partition count, the sorted live host names, a host's shard count),
so that all agree on the desired owners without talking to each other; the
leases then make sure no two run one partition at once while they converge.

* :func:`partition_of`: CRC-32 of the account's typed bytes (the ring's
  :func:`~skns.executor.ring.account_key`, so ``5`` and ``"5"`` differ) modulo
  the partition count: stable across processes, hosts and Python versions
  (Python's ``hash()`` of a str is salted per process).
* :func:`assign`: items (partitions) spread over bins (hosts, or the shards of
  one host) within one of even, each item on its highest-scoring bin that still
  has room (rendezvous hashing with capacities). A bin that joins or leaves
  moves few items besides its own share, where a plain round robin (``p % n``)
  would move most of them, and every move is a handover that pauses its
  partition.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Iterable, Sequence

from .ring import Account, account_key


def partition_of(account: Account, partitions: int) -> int:
    return zlib.crc32(account_key(account)) % partitions


def _score(item: int, bin_name: str) -> int:
    digest = hashlib.blake2b(b"%d/%s" % (item, bin_name.encode()), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def assign(items: Iterable[int], bins: Sequence[str]) -> dict[int, str]:
    """``item -> bin`` for every item; each bin gets ``len(items) // len(bins)`` items or
    one more (the first bins in sorted order get the extra ones)."""
    return dict(_placed(tuple(sorted(items)), tuple(sorted(set(bins)))))


# Every process works the placement out again at each look at the roster (twice a second,
# with the same hosts nearly always): remembered, it costs a lookup, not 64 x hosts hashes
# (a quarter of an idle shard's CPU).
@functools.lru_cache(maxsize=64)
def _placed(items: tuple[int, ...], ordered: tuple[str, ...]) -> dict[int, str]:
    """:func:`assign` of sorted items over sorted distinct bins (shared: not to be changed)."""
    if not ordered:
        return {}
    base, extra = divmod(len(items), len(ordered))
    room = {b: base + (1 if i < extra else 0) for i, b in enumerate(ordered)}
    placed: dict[int, str] = {}
    for item in items:
        for _, b in sorted(((_score(item, b), b) for b in ordered), reverse=True):
            if room[b]:
                room[b] -= 1
                placed[item] = b
                break
    return placed


def host_partitions(partitions: int, hosts: Iterable[str], host: str) -> list[int]:
    """The partitions ``host`` should run, given the live hosts."""
    placed = _placed(tuple(range(partitions)), tuple(sorted(set(hosts))))
    return sorted(p for p, owner in placed.items() if owner == host)


def shard_partitions(mine: Sequence[int], shards: int, shard: int) -> list[int]:
    """Of a host's partitions, those its shard ``shard`` (of ``shards``) runs."""
    placed = _placed(tuple(sorted(mine)), tuple(sorted(str(i) for i in range(shards))))
    return sorted(p for p, owner in placed.items() if owner == str(shard))
