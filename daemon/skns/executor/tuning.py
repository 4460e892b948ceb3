"""Garbage-collector settings for the executor's children."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Fewer collections: router and shards allocate a few objects per event.

    What is alive once a child has started (modules, settings) is frozen out of
    the collector's scans, and the youngest generation is collected every
    50,000 allocations instead of 700. Measured with the zero-cost benchmark:
    a third less CPU per event in a shard. Cycles are still collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
