"""One log line per key per interval, with a count of those held back.

Bad datagrams, bad HTTP requests and contained faults can come by the thousand a
second; each is worth a line, but not each occurrence: the first of a kind is logged
at once, then at most one per ``interval`` seconds, saying how many were left out.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable


class RateGate:
    """Lets one event per key through every ``interval`` seconds; counts the rest."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}  # key -> when one was last let through
        self._held: Counter[Hashable] = Counter()  # key -> held back since then

    def allow(self, key: Hashable) -> int | None:
        """None: hold this one back (counted). Else let it through, and the number of
        events of ``key`` held back since the last one let through."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
