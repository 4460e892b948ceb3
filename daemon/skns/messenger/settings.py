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
    # Longest sender name and text accepted, in characters; longer ones get a 400.
    sender_max: int = 64
    text_max: int = 4096
    # Group commit: every request waiting when a transaction starts joins it. Off: one
    # transaction per request (the benchmark baseline).
    batching: bool = True
    # Most messages one transaction takes; the rest wait for the next one.
    batch_max: int = 512
    # Under load (the last transaction took more than one message), milliseconds to wait
    # before the next one so that more requests join it; an idle replica never waits.
    batch_delay_ms: float = 2.0
    # PostgreSQL connections per replica (batching needs one or two; without it, this
    # bounds the transactions a replica has in flight).
    pool_size: int = 4
    # Seconds a request may wait for a database connection or a statement before it gets 503.
    db_timeout: float = 5.0
    # Seconds a client has to send a whole request head, counted from connecting or from the
    # previous answer (an idle keep-alive connection is closed after it too), and again for
    # the body (408); a slow client (slowloris) is closed, not waited for.
    request_timeout: float = 10.0
    # Client connections one replica keeps open at most; more are answered 503 and closed.
    # Keep it well below the open-file limit (LimitNOFILE=65536 in the unit).
    max_connections: int = 1024
    # Seconds the pool keeps retrying a lost connection (backing off) before starting afresh.
    reconnect_timeout: float = 10.0

    def validate(self) -> None:
        self.require(bool(self.listen), "listen", "must name at least one address")
        self.require(len(set(self.listen)) == len(self.listen), "listen", "has duplicates")
        self.require(1 <= self.sender_max <= 1024, "sender_max", "must be within 1..1024")
        self.require(1 <= self.text_max <= 1_000_000, "text_max", "must be within 1..1000000")
        self.require(1 <= self.batch_max <= 10_000, "batch_max", "must be within 1..10000")
        self.require(0 <= self.batch_delay_ms <= 1000, "batch_delay_ms", "must be within 0..1000")
        self.require(1 <= self.pool_size <= 100, "pool_size", "must be within 1..100")
        self.require(self.db_timeout > 0, "db_timeout", "must be > 0")
        self.require(self.reconnect_timeout > 0, "reconnect_timeout", "must be > 0")
        self.require(0 < self.request_timeout <= 3600, "request_timeout", "must be within 0..3600")
        self.require(
            1 <= self.max_connections <= 60_000, "max_connections", "must be within 1..60000"
        )
