"""The ``[relay]`` table."""

from __future__ import annotations

import dataclasses

from ..settings import Section

BUFFER_LIMIT_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class RelaySettings(Section):
    table = "relay"
    # Off by default: it needs a source (see `python -m skns.relay`).
    enabled: bool = False
    source: str = "ws://127.0.0.1:9130/raw-messages"
    # "{name}" in the sink URL is replaced by `name`.
    sink: str = "ws://127.0.0.1:9130/ordered-messages/{name}"
    name: str = "skns"
    # An integer, or "auto": learn it from the lowest id seen in the first moments.
    first_id: int | str = "auto"
    # How long a missing id may hold back later ones; 0 waits forever.
    gap_timeout_ms: int = 0
    # With first_id = "auto": how long after the first message to wait for lower ids.
    settle_ms: int = 200
    # Most messages held back at once; beyond it the oldest gap is skipped.
    buffer_limit: int = 1_000_000
    # Most bytes of messages held at once (reorder buffer and those waiting for the sink):
    # past it the source is not read; a reorder buffer alone past it skips its oldest gap.
    buffer_limit_bytes: int = BUFFER_LIMIT_BYTES
    # Reconnect delay after a lost connection (either side): doubles from the first
    # value up to the second; a connection that opens resets it.
    reconnect_backoff_ms: int = 100
    reconnect_backoff_max_ms: int = 5000

    def validate(self) -> None:
        for key in ("source", "sink"):
            url = getattr(self, key)
            self.require(url.startswith(("ws://", "wss://")), key, "must be a ws:// or wss:// URL")
        self.require(
            isinstance(self.first_id, int) or self.first_id == "auto",
            "first_id",
            'must be an integer or "auto"',
        )
        self.require(self.gap_timeout_ms >= 0, "gap_timeout_ms", "must be >= 0 (0: wait forever)")
        self.require(self.settle_ms >= 0, "settle_ms", "must be >= 0")
        self.require(self.buffer_limit >= 1, "buffer_limit", "must be >= 1")
        self.require(self.buffer_limit_bytes >= 1, "buffer_limit_bytes", "must be >= 1")
        self.require(self.reconnect_backoff_ms > 0, "reconnect_backoff_ms", "must be > 0")
        self.require(
            self.reconnect_backoff_max_ms >= self.reconnect_backoff_ms,
            "reconnect_backoff_max_ms",
            "must be >= reconnect_backoff_ms",
        )

    @property
    def sink_url(self) -> str:
        """The sink URL with the name filled in."""
        return self.sink.replace("{name}", self.name)
