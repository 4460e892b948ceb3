"""The ``[executor]`` table."""

from __future__ import annotations

import dataclasses

from ..settings import HostPort, Section


@dataclasses.dataclass(frozen=True)
class ExecutorSettings(Section):
    table = "executor"
    enabled: bool = True
    # WebSocket ingest of the router; GET /health answers there too.
    listen: HostPort = HostPort("127.0.0.1", 9126)
    # 0: one shard per CPU.
    shards: int = 0
    # module:function, sync (run in a thread, see `threads`) or async.
    handler: str = "skns.executor.handlers:sleep"
    # Seconds, for the sleep handler.
    duration: float = 1.0
    # Most threads per shard for sync handlers. Threads are started on demand, one per account
    # whose sync handler is running (an account runs one event at a time), so the pool grows
    # with the accounts that have work, up to this ceiling; past it, accounts wait for a thread.
    threads: int = 1024
    # Seconds one attempt of a handler may take before it counts as failed; 0: no limit.
    # An async handler is cancelled then; a sync one cannot be and runs on in its thread.
    handler_timeout: float = 0.0
    # Extra attempts for an event whose handler raised, then it is recorded as failed.
    retries: int = 3
    # Delay before the first retry in seconds, doubling per attempt up to retry_backoff_max.
    retry_backoff: float = 0.1
    retry_backoff_max: float = 5.0
    # Journal every event before its ack and replay unfinished ones on start.
    journal: bool = True
    # fsync the journal before acking (false: survives a process crash, not a power loss).
    fsync: bool = True
    # Seconds to gather more events before a journal write; 0: write as soon as the previous
    # fsync is done (events arriving meanwhile share the next fsync either way).
    fsync_interval: float = 0.0
    # The journal is rewritten with only the unfinished events when it passes this size
    # (and at an eighth of it whenever nothing is pending).
    compact_bytes: int = 64 * 1024 * 1024
    # A shard stops reading from the router while this many of its events are unfinished ...
    max_backlog: int = 200_000
    # ... and the router stops reading from clients while this many events wait for a shard.
    max_unacked: int = 50_000
    # Largest ingest frame accepted; a larger one gets an error frame, the connection stays.
    max_frame_bytes: int = 1024 * 1024
    # Largest number of events in one batch frame.
    max_batch: int = 10_000
    # Ingest connections open at once; past it a new one gets 503 with a JSON body and is
    # closed (GET /health is still answered). Keep it well below the open-file limit
    # (LimitNOFILE=65536 in the unit).
    max_connections: int = 1024
    # Seconds, on stop: the router waits this long for the shards' acks of what it sent (and
    # for a client's close handshake); a shard reads on for the router this long, then lets
    # running handlers finish this long before cancelling them (they run again on start).
    drain_timeout: float = 2.0

    def validate(self) -> None:
        self.require(self.shards >= 0, "shards", "must be >= 0 (0: one per CPU)")
        self.require(
            ":" in self.handler and all(self.handler.split(":", 1)),
            "handler",
            "must be 'module:function'",
        )
        self.require(self.duration >= 0, "duration", "must be >= 0")
        self.require(1 <= self.threads <= 4096, "threads", "must be within 1..4096")
        self.require(self.handler_timeout >= 0, "handler_timeout", "must be >= 0 (0: no limit)")
        self.require(self.retries >= 0, "retries", "must be >= 0")
        self.require(self.retry_backoff >= 0, "retry_backoff", "must be >= 0")
        self.require(
            self.retry_backoff_max >= self.retry_backoff,
            "retry_backoff_max",
            "must be >= retry_backoff",
        )
        self.require(self.fsync_interval >= 0, "fsync_interval", "must be >= 0")
        self.require(self.compact_bytes >= 65536, "compact_bytes", "must be >= 65536")
        self.require(self.max_backlog >= 1, "max_backlog", "must be >= 1")
        self.require(self.max_unacked >= 1, "max_unacked", "must be >= 1")
        self.require(
            1024 <= self.max_frame_bytes <= 64 * 1024 * 1024,
            "max_frame_bytes",
            "must be within 1024..67108864",
        )
        self.require(self.max_batch >= 1, "max_batch", "must be >= 1")
        self.require(
            1 <= self.max_connections <= 60_000, "max_connections", "must be within 1..60000"
        )
        self.require(self.drain_timeout >= 0, "drain_timeout", "must be >= 0")

    def shard_count(self, cpus: int | None) -> int:
        """K: the configured count, or one per CPU."""
        return self.shards or cpus or 1
