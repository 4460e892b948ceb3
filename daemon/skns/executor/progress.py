"""Cluster mode: a partition's progress, as Kafka's parallel consumers keep it.

A partition's events arrive in stream-sequence order (sparse: the stream holds
every partition) and finish in any order, since accounts run concurrently. The
progress is the *low watermark* (every event of the partition at or below it is
finished) and the set of finished sequences above it. That pair is committed to
the key-value store; a new owner resumes delivery at watermark + 1 and skips the
sequences of the set, so only events running when the old owner stopped run
again (at-least-once). A failed event (every attempt raised) counts as finished.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import orjson

from ..errors import ProtocolError


class Progress:
    def __init__(self, watermark: int = 0, finished: Iterable[int] = ()) -> None:
        self.watermark = watermark
        # Finished per the last commit and not delivered again yet: skipped on delivery.
        self._committed = {seq for seq in finished if seq > watermark}
        self._outstanding: deque[int] = deque()  # delivered, not passed by the watermark
        self._finished: set[int] = set()  # finished among _outstanding
        self.last = watermark  # highest sequence delivered
        self.changed = False  # since the last snapshot

    def delivered(self, seq: int) -> bool:
        """Sequence ``seq`` came from the stream; False: it finished before, skip it."""
        if seq <= self.last:
            return False  # a redelivery after a consumer was made again
        self.last = seq
        self._outstanding.append(seq)
        if seq in self._committed:
            self._committed.discard(seq)
            self.finished(seq)
            return False
        return True

    def finished(self, seq: int) -> None:
        self._finished.add(seq)
        self.changed = True
        outstanding, done = self._outstanding, self._finished
        while outstanding and outstanding[0] in done:
            self.watermark = outstanding.popleft()
            done.discard(self.watermark)

    @property
    def pending(self) -> int:
        """Delivered and not finished."""
        return len(self._outstanding) - len(self._finished)

    def snapshot(self) -> tuple[int, list[int]]:
        """(watermark, finished sequences above it), as committed."""
        self.changed = False
        return self.watermark, sorted(self._finished | self._committed)

    def encode(self) -> bytes:
        watermark, finished = self.snapshot()
        return orjson.dumps({"w": watermark, "f": finished})

    @classmethod
    def decode(cls, data: bytes) -> Progress:
        """The progress of a commit; raises ProtocolError if it is not one."""
        try:
            doc = orjson.loads(data)
            watermark, finished = doc["w"], doc["f"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not a partition commit: {exc}") from None
        ok = type(watermark) is int and watermark >= 0 and type(finished) is list
        if not ok or not all(type(s) is int for s in finished):
            raise ProtocolError("not a partition commit: bad watermark or sequences")
        return cls(watermark, finished)
