"""The executor's processes: one router and K shards."""

from __future__ import annotations

import os

from ..child import ChildSpec
from ..config import Settings
from . import router, shard


def children(settings: Settings) -> list[ChildSpec]:
    count = settings.executor.shard_count(os.cpu_count())
    listen = settings.executor.listen
    run_shard = shard.run
    if settings.cluster.enabled:
        from . import owner  # nats-py is loaded in cluster mode only

        run_shard = owner.run  # the shards own partitions of the cluster's stream
    specs = [ChildSpec("executor", "executor-router", 0, router.run, listen=listen)]
    specs.extend(ChildSpec("executor", "executor-shard", i, run_shard) for i in range(count))
    return specs
