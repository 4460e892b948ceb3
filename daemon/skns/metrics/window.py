"""Window arithmetic and the per-window aggregate: pure logic, no I/O.

Windows are aligned to the wall clock. Base window ``w`` (an integer index)
covers ``[w * base, (w + 1) * base)``; a longer interval of ``k`` base windows
covers base windows ``[i * k, (i + 1) * k)`` and closes with base window
``(i + 1) * k - 1``.
"""

from __future__ import annotations

import dataclasses
import json
import math

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def index_of(t: float, base: float) -> int:
    """The base window holding time ``t``."""
    return math.floor(t / base)


def end_of(w: int, base: float) -> float:
    """The end of base window ``w``: the window's timestamp in the output."""
    return (w + 1) * base


def timestamp(end: float) -> int | float:
    """Whole seconds as an integer; fractional ends (short test windows) to the microsecond."""
    return int(end) if float(end).is_integer() else round(end, 6)


def label(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclasses.dataclass
class Aggregate:
    """count, sum of A1, max of A2, min of A3 over some datagrams (zeros when empty)."""

    count: int = 0
    a1_sum: int = 0
    a2_max: int = 0
    a3_min: int = 0

    def merge(self, other: Aggregate) -> None:
        if not other.count:
            return
        if not self.count:
            self.a2_max, self.a3_min = other.a2_max, other.a3_min
        else:
            self.a2_max = max(self.a2_max, other.a2_max)
            self.a3_min = min(self.a3_min, other.a3_min)
        self.count += other.count
        self.a1_sum += other.a1_sum

    def extra(self) -> dict[str, int]:
        """Keys a line shows after ``count`` (the fleet view's ``hosts``)."""
        return {}

    def as_list(self) -> list[int]:
        return [self.count, self.a1_sum, self.a2_max, self.a3_min]

    @classmethod
    def from_list(cls, values: list[int]) -> Aggregate:
        count, a1_sum, a2_max, a3_min = (int(v) for v in values)
        return cls(count, a1_sum, a2_max, a3_min)


def line(end: float, seconds: float, agg: Aggregate) -> str:
    """One output line. The first five keys and their order are the contract.

    The stdlib encoder is used on purpose: a line is written once per window,
    and A1_sum may outgrow 64 bits, which orjson refuses.
    """
    return json.dumps(
        {
            "timestamp": timestamp(end),
            "count_type": label(seconds),
            "A1_sum": agg.a1_sum,
            "A2_max": agg.a2_max,
            "A3_min": agg.a3_min,
            "count": agg.count,
            **agg.extra(),
        }
    )


def place(row: dict[str, object]) -> tuple[float, float]:
    """Where a line comes in the output: by window end, then shortest interval first."""
    return float(row["timestamp"]), float(str(row["count_type"]).removesuffix("s"))  # type: ignore[arg-type]


@dataclasses.dataclass
class Schedule:
    """Which output lines a closing base window produces.

    ``intervals`` are in seconds, each a whole multiple of ``base``; lines for
    intervals ending together come shortest first, so the base line leads.
    """

    base: float
    intervals: tuple[float, ...]

    def __post_init__(self) -> None:
        self.intervals = tuple(sorted(self.intervals))
        self.multiples = tuple(round(n / self.base) for n in self.intervals)
