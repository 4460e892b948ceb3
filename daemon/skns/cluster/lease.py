"""A lease: one key of a JetStream key-value bucket, held by one holder at a time.

The bucket's ``ttl`` is the lease's life: a key not renewed within it ages out
of the stream, and the next ``create`` succeeds. Taking the key is a ``create``
(fails while it exists); renewing is an ``update`` with the revision the holder
last wrote (fails once another holder has taken the key after an expiry).

Fencing: the holder counts its lease from the moment it *sent* the request that
took or renewed it, so it believes the lease over before the server can age the
key out; work guarded by :meth:`Lease.held` stops ``margin`` seconds earlier.

Giving a lease up purges its key from the bucket's stream rather than deleting it:
a delete leaves a marker, and over a marker nats-server before 2.9.21 (Debian 12
ships 2.9.10) lets two creates sent at once through different nodes *both* succeed
at replicas 3 (nats-server#4320; ``skns-ctl bench cluster`` measured 11-17 of 100
here), which would give a partition two owners. A key that is gone, as after its
expiry, is taken by one create only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

log = logging.getLogger("skns.cluster")


async def lease_bucket(js: Any, name: str, ttl: float, replicas: int) -> Any:
    """The key-value bucket ``name`` whose keys expire ``ttl`` s after their last write."""
    from nats.js.api import KeyValueConfig

    try:
        return await js.key_value(name)
    except NotFoundError:
        config = KeyValueConfig(bucket=name, history=1, ttl=ttl, replicas=replicas)
        return await js.create_key_value(config)


async def purge_key(js: Any, bucket: str, key: str) -> None:
    """Remove every entry of ``key`` from the bucket's stream, leaving no marker."""
    await js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")


class Lease:
    def __init__(
        self, kv: Any, key: str, holder: str, ttl: float, margin: float, *, js: Any, bucket: str
    ) -> None:
        self.kv = kv
        self.js = js  # and bucket: to purge the key when the lease is given up
        self.bucket = bucket
        self.key = key
        self.holder = holder.encode()
        self.ttl = ttl
        self.margin = margin
        self.revision: int | None = None
        self._since = 0.0  # monotonic time the last successful take or renewal was sent

    def held(self) -> bool:
        """May the holder act on it now (inside its life less the margin)?"""
        return self.revision is not None and time.monotonic() - self._since < self.ttl - self.margin

    async def take(self) -> bool:
        """Take the lease if nobody holds it; True when this holder has it now."""
        if self.revision is not None:
            return await self.renew()
        sent = time.monotonic()
        try:
            self.revision = await self.kv.create(self.key, self.holder)
        except (JetStreamError, NatsError, TimeoutError):
            return False
        self._since = sent
        log.info("took the lease %s", self.key)
        return True

    async def renew(self) -> bool:
        """Renew a held lease; False (and not held any more) when that failed."""
        if self.revision is None:
            return False
        sent = time.monotonic()
        try:
            self.revision = await self.kv.update(self.key, self.holder, last=self.revision)
        except KeyWrongLastSequenceError:
            self.revision = None  # another holder took it after it expired
            log.warning("lost the lease %s to another holder", self.key)
            return False
        except (JetStreamError, NatsError, TimeoutError) as exc:
            if time.monotonic() - self._since >= self.ttl - self.margin:
                self.revision = None
                log.warning("lost the lease %s: %s", self.key, exc)
            return self.held()
        self._since = sent
        return True

    async def release(self) -> None:
        """Give the lease up at once (a graceful stop), so another holder need not wait.

        A purge does not check the revision, so it is sent only while the lease is
        surely still this holder's (inside its life less the margin) and given half the
        margin; otherwise the key is left to expire."""
        if self.revision is None:
            return
        held = self.held()
        self.revision = None
        if not held:
            return
        try:
            await asyncio.wait_for(purge_key(self.js, self.bucket, self.key), self.margin / 2)
        except (JetStreamError, NatsError, TimeoutError) as exc:
            log.debug("releasing the lease %s: %s", self.key, exc)
