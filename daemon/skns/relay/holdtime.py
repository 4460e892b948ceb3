"""Per-message hold times in a fixed log-linear histogram.

Every message adds one sample, so the structure must be bounded and cheap:
values (integer nanoseconds) fall into buckets of 32 per power of two, an
HDR-histogram layout. A quantile is reported as its bucket's middle, within
1.6 % of the true value; min, max, count and sum are exact. Memory is a fixed
list of ~1,500 counters whatever the number of samples; adding one is a few
integer operations.
"""

from __future__ import annotations

from typing import Any

_SUB_BITS = 5  # 32 sub-buckets per power of two
_SUB = 1 << _SUB_BITS
_LINEAR = 2 * _SUB  # values below this have a bucket each
_MAX_SHIFT = 44  # values up to ~2**50 ns (13 days) keep their own bucket
_BUCKETS = (_MAX_SHIFT + 2) * _SUB


def _bucket_middle(index: int) -> int:
    """A representative value of bucket ``index`` (its middle)."""
    if index < _LINEAR:
        return index
    shift = (index >> _SUB_BITS) - 1
    mantissa = (index & (_SUB - 1)) | _SUB
    return (mantissa << shift) + (1 << (shift - 1))


class HoldTimes:
    """Counts of hold times in nanoseconds, with min, max and quantiles."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def add(self, value: int) -> None:
        """Record one hold time (nanoseconds, >= 0)."""
        self.add_until(value, [0])

    def add_until(self, end: int, starts: list[int]) -> None:
        """Record ``end - start`` for every start (at least one): a batch that ended together."""
        counts = self.counts
        total = 0
        low = high = end - starts[0]
        for start in starts:
            value = end - start
            total += value
            if value < low:
                low = value
            elif value > high:
                high = value
            # The bucket: the value itself below _LINEAR, else its top bits.
            shift = value.bit_length() - _SUB_BITS - 1
            if shift <= 0:
                counts[value] += 1
            elif shift > _MAX_SHIFT:
                counts[_BUCKETS - 1] += 1
            else:
                counts[(shift << _SUB_BITS) + (value >> shift)] += 1
        self.count += len(starts)
        self.total += total
        if self.min is None or low < self.min:
            self.min = low
        if self.max is None or high > self.max:
            self.max = high

    def quantile(self, q: float) -> int | None:
        """The value below which a fraction ``q`` of samples fall (None when empty)."""
        if not self.count:
            return None
        assert self.min is not None and self.max is not None
        rank = max(1, round(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(max(_bucket_middle(index), self.min), self.max)
        return self.max  # pragma: no cover - counts always sum to count

    def summary_us(self) -> dict[str, Any]:
        """min, p50, p99, max and mean in microseconds (None when empty), and the count."""

        def us(ns: int | None) -> float | None:
            return None if ns is None else round(ns / 1000, 1)

        return {
            "count": self.count,
            "min_us": us(self.min),
            "p50_us": us(self.quantile(0.5)),
            "p99_us": us(self.quantile(0.99)),
            "max_us": us(self.max),
            "mean_us": us(self.total // self.count) if self.count else None,
        }
