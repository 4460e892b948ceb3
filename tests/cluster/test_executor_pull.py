"""A partition's reader on a real 3-node cluster: consumers made over the lean connection
get their first pull answered, whichever node the process's other connection uses."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js import api

from skns.cluster.lean import Lean
from skns.cluster.natscluster import NatsCluster
from skns.cluster.settings import ClusterSettings
from skns.executor.pull import Reader, make_consumer

CONSUMERS = 60


def test_the_first_pull_of_every_new_consumer_is_answered(nats_cluster: NatsCluster) -> None:
    # Made through nats-py on node 1 and pulled through node 2, 5 of 100 first pulls got
    # no answer at all (dropped before the consumer's interest reached node 2).
    async def scenario() -> None:
        nc = await nats.connect(nats_cluster.urls[0])
        lean = Lean(ClusterSettings(nats=(nats_cluster.urls[1],), name="t"), "test")
        assert await lean.open(asyncio.Event())
        try:
            js = nc.jetstream()
            await js.add_stream(
                api.StreamConfig(name="PULLS", subjects=["pulls.>"], num_replicas=3)
            )
            for i in range(CONSUMERS):
                await js.publish(f"pulls.{i}", b"event %d" % i)
            missed = []
            for i in range(CONSUMERS):
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.NONE,
                    filter_subject=f"pulls.{i}",
                    mem_storage=True,
                    num_replicas=1,
                    inactive_threshold=30,
                )
                name = await make_consumer(lean, "PULLS", config, 5.0)
                got: list[bytes] = []
                reader = Reader(
                    lean, "PULLS", name, lambda seq, data, pending, got=got: got.append(data)
                )
                reader.open()
                await reader.pull(1, 1.0)
                reader.close()
                if got != [b"event %d" % i]:
                    missed.append(i)
            assert missed == []
        finally:
            await lean.close()
            await nc.close()

    asyncio.run(scenario())


def test_a_pull_whose_consumer_node_dies_counts_as_unanswered_within_seconds(
    nats_cluster: NatsCluster,
) -> None:
    # Last in this module: it kills a node. The consumer's node dies under an open pull sent
    # through another node: nothing will ever answer it. Without the server's heartbeats
    # the reader knew only at the request's expiry (here 20 s; 5 s in service, then 1 s of
    # grace), and the partition took nothing meanwhile.
    async def scenario() -> tuple[bool, float]:
        nc = await nats.connect(nats_cluster.urls[0])
        lean = Lean(ClusterSettings(nats=(nats_cluster.urls[1],), name="t"), "test")
        assert await lean.open(asyncio.Event())
        try:
            js = nc.jetstream()
            await js.add_stream(api.StreamConfig(name="BEATS", subjects=["beats"], num_replicas=3))
            config = api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, mem_storage=True, num_replicas=1
            )
            for _ in range(20):  # placed on another node than the lean connection's
                name = await make_consumer(lean, "BEATS", config, 5.0)
                where = (await js.consumer_info("BEATS", name)).cluster.leader
                if where != nats_cluster.nodes[1].name:
                    break
                await js.delete_consumer("BEATS", name)
            reader = Reader(lean, "BEATS", name, lambda seq, data, pending: None)
            reader.open()
            pull = asyncio.create_task(reader.pull(1, 20.0))
            await asyncio.sleep(1.5)  # open, and a heartbeat heard
            assert not pull.done()
            nats_cluster.kill([node.name for node in nats_cluster.nodes].index(where))
            killed = time.monotonic()
            answered = await pull
            return answered, time.monotonic() - killed
        finally:
            await lean.close()
            await nc.close()

    answered, took = asyncio.run(scenario())
    print(f"pull silent {took:.2f} s after its consumer's node was killed")
    assert not answered
    assert took < 10.0
