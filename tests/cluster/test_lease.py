"""The key-value lease on a real 3-node JetStream cluster."""

from __future__ import annotations

import asyncio
import time

import nats

from skns.cluster.lease import Lease, lease_bucket
from skns.cluster.natscluster import NatsCluster

TTL = 1.0


def test_one_holder_at_a_time_taken_over_after_expiry(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        nc = await nats.connect(nats_cluster.urls[0])
        try:
            kv = await lease_bucket(nc.jetstream(), "lease_test", TTL, 3)
            assert (await lease_bucket(nc.jetstream(), "lease_test", TTL, 3)) is not None
            a = Lease(kv, "k", "a", TTL, TTL / 3)
            b = Lease(kv, "k", "b", TTL, TTL / 3)
            assert await a.take() and a.held()
            assert not await b.take() and not b.held()
            assert await a.renew()
            # a stops renewing: it stops acting before the key ages out, then b takes it.
            await asyncio.sleep(TTL - TTL / 3)
            assert not a.held()
            deadline = time.monotonic() + 10
            while not await b.take():
                assert time.monotonic() < deadline, "the lease never expired"
                await asyncio.sleep(0.1)
            assert b.held()
            assert not await a.renew() and a.revision is None  # fenced: b holds it now
            await b.release()
            assert not b.held()
            assert await a.take()  # released: no need to wait for the expiry
        finally:
            await nc.close()

    asyncio.run(scenario())
