"""The ``[relay]`` table."""

from __future__ import annotations

import dataclasses

from ..settings import Section


@dataclasses.dataclass(frozen=True)
class RelaySettings(Section):
    table = "relay"
    # Off by default: it needs a source (see `python -m skns.relay`).
    enabled: bool = False
    source: str = "ws://127.0.0.1:9130/raw-messages"
    sink: str = "ws://127.0.0.1:9130/ordered-messages/{name}"
    name: str = "skns"
    # An integer, or "auto": learn it from the lowest id seen in the first moments.
    first_id: int | str = "auto"
    # How long a missing id may hold back later ones; 0 waits forever.
    gap_timeout_ms: int = 0
