"""A lease: one key of a JetStream key-value bucket, held by one holder at a time.

The bucket's ``ttl`` is the lease's life: a key not renewed within it ages out
of the stream, and the next ``create`` succeeds. Taking the key is a ``create``
(fails while it exists); renewing is an ``update`` with the revision the holder
last wrote (fails once another holder has taken the key after an expiry).

Fencing: the holder counts its lease from the moment it *sent* the request that
took or renewed it, so it believes the lease over before the server can age the
key out; work guarded by :meth:`Lease.held` stops ``margin`` seconds earlier.
"""

from __future__ import annotations

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


class Lease:
    def __init__(self, kv: Any, key: str, holder: str, ttl: float, margin: float) -> None:
        self.kv = kv
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
        """Give the lease up at once (a graceful stop), so another holder need not wait."""
        if self.revision is None:
            return
        revision, self.revision = self.revision, None
        try:
            await self.kv.delete(self.key, last=revision)
        except (JetStreamError, NatsError, TimeoutError) as exc:
            log.debug("releasing the lease %s: %s", self.key, exc)
