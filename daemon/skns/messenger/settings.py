"""The ``[messenger]`` table."""

from __future__ import annotations

import dataclasses

from ..settings import HostPort, Section


@dataclasses.dataclass(frozen=True)
class MessengerSettings(Section):
    table = "messenger"
    enabled: bool = True
    # One replica process per address.
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 9127), HostPort("127.0.0.1", 9128))
    # PostgreSQL conninfo; empty: SQLite in state_dir.
    dsn: str = ""
