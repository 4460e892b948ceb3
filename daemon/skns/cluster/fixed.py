"""Settings fixed when the cluster's streams and buckets are made: the refusal of a host
configured otherwise (its executor or task server does not start; the supervisor says why)."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import LayoutMismatch


def same(mine: float, theirs: float) -> bool:
    """Equal as configured (a TTL comes back from the server in nanoseconds)."""
    return math.isclose(mine, theirs, abs_tol=1e-6)


def refusal(key: str, mine: float, path: Path | None, theirs: float, why: str) -> LayoutMismatch:
    """The error for ``key`` (``[table] key``) set to ``mine`` in ``path``, made ``theirs``."""
    name = key.split()[-1]
    return LayoutMismatch(
        f"{key} = {mine:g} in {path or 'the config'}, but the cluster was made with {name} = "
        f"{theirs:g}: every host must have the same ({why}); set it to {theirs:g}, or remake "
        "the cluster's streams and buckets to change it (README, cluster mode)"
    )
