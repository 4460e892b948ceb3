"""The ``[executor]`` table."""

from __future__ import annotations

import dataclasses

from ..settings import HostPort, Section


@dataclasses.dataclass(frozen=True)
class ExecutorSettings(Section):
    table = "executor"
    enabled: bool = True
    listen: HostPort = HostPort("127.0.0.1", 9126)
    # 0: one shard per CPU.
    shards: int = 0
    handler: str = "skns.executor.handlers:sleep"
    duration: float = 1.0
