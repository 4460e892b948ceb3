"""The ``[tasks]`` table."""

from __future__ import annotations

import dataclasses
import os

from ..settings import HostPort, Section


@dataclasses.dataclass(frozen=True)
class TasksSettings(Section):
    table = "tasks"
    enabled: bool = True
    # WebSocket server; GET /health on the same port answers a JSON health check.
    listen: HostPort = HostPort("127.0.0.1", 9129)
    # Numbers up to soft_max go to the soft queue, larger ones to the hard queue.
    soft_max: int = 1000
    # Seconds a job may compute before its worker process is killed ("Timeout error").
    soft_limit: float = 10.0
    hard_limit: float = 60.0
    # Worker processes per queue; 0: one per CPU.
    soft_workers: int = 0
    hard_workers: int = 0
    # Jobs handed to one worker at a time (the running one included): more than 1 lets a
    # worker start its next job without waiting for the server; jobs behind a job that times
    # out go back to the queue. Keep hard at 1: a big job would hold up the jobs behind it.
    soft_prefetch: int = 4
    hard_prefetch: int = 1
    # Larger numbers are refused with "Number too large" (1,000,000! has 5,565,709 digits).
    max_number: int = 1_000_000
    # Seconds a finished task's result (or its timeout) stays fetchable by id.
    result_ttl: float = 3600.0
    # Memory cap on stored results: past it the oldest results are dropped before their TTL.
    store_max_bytes: int = 512 * 1024 * 1024
    # Jobs waiting per queue; more are refused with "Server busy".
    max_queued: int = 100_000
    # Jobs one connection may have unfinished plus final frames not yet written to it; at
    # the limit the server stops reading that connection until one is written, so a client
    # that sends without reading cannot take the queues (or the memory) from the others.
    max_pending_per_connection: int = 256
    # Largest request frame accepted; larger ones close the connection (code 1009).
    max_request_bytes: int = 65536
    # WebSocket connections open at once; past it a new one gets 503 with a JSON body and is
    # closed (GET /health is still answered). Keep it well below the open-file limit
    # (LimitNOFILE=65536 in the unit).
    max_connections: int = 1024
    # Single host: the journal (state_dir/tasks/journal.jsonl) that keeps accepted jobs and
    # their outcomes across a crash is rewritten with its live entries only once it has
    # grown past this many bytes (and past twice the size of its last rewrite).
    journal_compact_bytes: int = 64 * 1024 * 1024

    def validate(self) -> None:
        self.require(self.soft_max >= 0, "soft_max", "must be >= 0")
        for key in ("soft_limit", "hard_limit", "result_ttl"):
            self.require(getattr(self, key) > 0, key, "must be > 0")
        for key in ("soft_workers", "hard_workers"):
            self.require(
                0 <= getattr(self, key) <= 256, key, "must be within 0..256 (0: one per CPU)"
            )
        for key in ("soft_prefetch", "hard_prefetch"):
            self.require(1 <= getattr(self, key) <= 64, key, "must be within 1..64")
        self.require(self.max_number >= 0, "max_number", "must be >= 0")
        # Jobs travel to the workers as unsigned 64-bit integers.
        self.require(self.max_number < 2**64, "max_number", "must be < 2**64")
        self.require(self.store_max_bytes >= 1, "store_max_bytes", "must be >= 1")
        self.require(self.max_queued >= 1, "max_queued", "must be >= 1")
        self.require(
            1 <= self.max_pending_per_connection <= 1_000_000,
            "max_pending_per_connection",
            "must be within 1..1000000",
        )
        self.require(self.max_request_bytes >= 256, "max_request_bytes", "must be >= 256")
        self.require(
            1 <= self.max_connections <= 60_000, "max_connections", "must be within 1..60000"
        )
        self.require(self.journal_compact_bytes >= 1, "journal_compact_bytes", "must be >= 1")

    def workers(self, queue: str) -> int:
        """Worker processes of ``queue`` ("soft" or "hard"), with 0 resolved to the CPU count."""
        n = self.soft_workers if queue == "soft" else self.hard_workers
        return n or len(os.sched_getaffinity(0))

    def limit(self, queue: str) -> float:
        return self.soft_limit if queue == "soft" else self.hard_limit

    def prefetch(self, queue: str) -> int:
        return self.soft_prefetch if queue == "soft" else self.hard_prefetch
