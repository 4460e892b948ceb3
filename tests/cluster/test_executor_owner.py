"""A partition owner in this process, on a real 3-node cluster: what it does when one of a
partition's own loops dies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from skns import config
from skns.cluster.natscluster import NatsCluster
from skns.executor import jetstream
from skns.executor.clusterhosts import tables
from skns.executor.owner import Owner, Partition
from skns.ports import free_port


async def stop_a_loop(settings: config.Settings) -> tuple[int, bool, bool, list[str]]:
    """Run partition 0 in an owner of this process, break its committer, and say what
    became of it: (loop failures counted, leaving, still held, its loops that ended)."""
    owner = Owner(settings, 0)
    stop = asyncio.Event()
    if not (await owner.conn.open(stop) and await owner.lean.open(stop)):
        raise RuntimeError("not connected")
    try:
        await jetstream.set_up(owner.conn, settings.cluster, create=True)
        if not await owner._set_up(stop):
            raise RuntimeError("not set up")
        partition = Partition(owner, 0)
        if not await partition.lease.take():
            raise RuntimeError("lease not taken")
        owner.partitions[0] = partition
        if not await partition.open():
            raise RuntimeError("not opened")
        await asyncio.sleep(0.3)
        if owner.loop_failures or partition.leaving:
            raise RuntimeError("stopped before its loop was broken")
        partition.progress = None  # type: ignore[assignment]  # its committer's next turn fails
        for _ in range(50):
            await asyncio.sleep(0.1)
            if 0 not in owner.partitions:
                break
        ended = [t.get_coro().__qualname__ for t in partition.tasks if t.done()]
        return owner.loop_failures, partition.leaving, 0 in owner.partitions, ended
    finally:
        await owner.lean.close()
        await owner.conn.close()


def test_a_partition_whose_loop_dies_is_stopped_not_kept_idle(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # Its lease renewed and nothing pulled (or nothing committed) would hold the partition
    # for good with /health at 200; stopped, its lease lapses and it runs again.
    settings = config.parse(
        tables(tmp_path, nats_cluster, "solo", free_port(), {"replicas": 1}, {}, {}),
        tmp_path / "test.toml",
    )
    failures, leaving, still_held, ended = asyncio.run(stop_a_loop(settings))
    assert failures == 1
    assert leaving and not still_held
    assert len(ended) == 3  # the other two loops were stopped with it
