"""The consistent-hash ring that maps accounts to shards.

Each shard owns ``vnodes`` points on a 64-bit ring, placed by hashing the
shard's index and the point's number; an account belongs to the shard owning
the first point at or after the account's hash. The points of shard ``i`` do
not depend on how many shards there are, so going from K to K+1 shards only
moves to the new shard the accounts its points now cover: about 1/(K+1) of
them, and nothing moves between the old shards.

Account ids are ints or strings and ``5`` and ``"5"`` are different accounts:
the hashed key carries the type.
"""

from __future__ import annotations

import bisect
import hashlib

Account = int | str

DEFAULT_VNODES = 256
_CACHE_MAX = 1 << 20


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def account_key(account: Account) -> bytes:
    """The bytes hashed for an account: typed, so 5 and "5" differ."""
    if isinstance(account, int):
        return b"i:%d" % account
    return b"s:" + account.encode("utf-8", "surrogatepass")


class Ring:
    """Maps an account to a shard index in ``range(shards)``."""

    def __init__(self, shards: int, vnodes: int = DEFAULT_VNODES) -> None:
        if shards < 1:
            raise ValueError("a ring needs at least one shard")
        if vnodes < 1:
            raise ValueError("a ring needs at least one point per shard")
        self.shards = shards
        points = sorted(
            (_hash(b"shard:%d:%d" % (shard, v)), shard)
            for shard in range(shards)
            for v in range(vnodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [s for _, s in points]
        # The router looks up every event; accounts repeat, so remember the answers.
        self._cache: dict[Account, int] = {}

    def shard_of(self, account: Account) -> int:
        try:
            return self._cache[account]
        except KeyError:
            pass
        i = bisect.bisect_left(self._hashes, _hash(account_key(account)))
        shard = self._owners[i if i < len(self._owners) else 0]
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[account] = shard
        return shard
