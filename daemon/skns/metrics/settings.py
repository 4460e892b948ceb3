"""The ``[metrics]`` table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..settings import HostPort, Section
from .recvmmsg import MAX_BATCH


@dataclasses.dataclass(frozen=True)
class MetricsSettings(Section):
    table = "metrics"
    enabled: bool = True
    listen: HostPort = HostPort("127.0.0.1", 9125)
    # 0: one worker per CPU, each pinned to its CPU.
    workers: int = 0
    # Base window in seconds; may be fractional (tests shorten it).
    window: float = 10.0
    # Each a multiple of window; the label is "<n>s".
    intervals: tuple[float, ...] = (10.0, 60.0)
    output: Path = Path("./var/metrics.jsonl").absolute()
    recv_buffer_bytes: int = 33554432
    # Datagrams taken per recvmmsg call, and the largest datagram accepted whole.
    batch: int = MAX_BATCH
    max_datagram: int = 2048
    # After a short batch, wait this long for a batch to build up (0: read on at once).
    coalesce_ms: float = 2.0
    # With [cluster] set: the fleet-wide lines (merged across hosts) go here; "": off.
    fleet_output: Path | str = ""
    # Seconds the fleet merger waits for a silent host's partial of a window; 0: 2 windows.
    fleet_grace: float = 0.0

    def validate(self) -> None:
        self.require(self.workers >= 0, "workers", "must be >= 0 (0: one per CPU)")
        self.require(self.window > 0, "window", "must be > 0")
        self.require(bool(self.intervals), "intervals", "must name at least one interval")
        for n in self.intervals:
            ratio = n / self.window
            self.require(
                n > 0 and abs(ratio - round(ratio)) < 1e-9,
                "intervals",
                f"{n:g} is not a positive multiple of window ({self.window:g})",
            )
        self.require(len(set(self.intervals)) == len(self.intervals), "intervals", "has duplicates")
        self.require(
            any(abs(n - self.window) < 1e-9 for n in self.intervals),
            "intervals",
            f"must include the base window ({self.window:g}): its line leads every window's lines",
        )
        self.require(self.recv_buffer_bytes >= 4096, "recv_buffer_bytes", "must be >= 4096")
        self.require(0 <= self.coalesce_ms <= 50, "coalesce_ms", "must be within 0..50")
        self.require(1 <= self.batch <= MAX_BATCH, "batch", f"must be within 1..{MAX_BATCH}")
        self.require(self.fleet_grace >= 0, "fleet_grace", "must be >= 0 (0: two windows)")
        self.require(128 <= self.max_datagram <= 65535, "max_datagram", "must be within 128..65535")

    @property
    def fleet_path(self) -> Path | None:
        return self.fleet_output if isinstance(self.fleet_output, Path) else None

    @property
    def grace(self) -> float:
        return self.fleet_grace or 2 * self.window
