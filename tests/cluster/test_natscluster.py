import asyncio

import nats

from skns.cluster.natscluster import NatsCluster


def test_three_nodes_form_one_jetstream_cluster_with_replicated_streams(nats_cluster: NatsCluster):
    async def check() -> int:
        nc = await nats.connect(nats_cluster.urls[0])
        try:
            js = nc.jetstream()
            await js.add_stream(name="probe", subjects=["probe.>"], num_replicas=3)
            ack = await js.publish("probe.x", b"1")
            info = await js.stream_info("probe")
            await js.delete_stream("probe")
            assert ack.seq == 1
            return 1 + len(info.cluster.replicas or [])
        finally:
            await nc.close()

    assert asyncio.run(check()) == 3
