"""The ``[tasks]`` table."""

from __future__ import annotations

import dataclasses

from ..settings import HostPort, Section


@dataclasses.dataclass(frozen=True)
class TasksSettings(Section):
    table = "tasks"
    enabled: bool = True
    listen: HostPort = HostPort("127.0.0.1", 9129)
