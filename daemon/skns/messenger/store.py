"""What the replicas need from a database, whichever it is.

A store takes a batch of ``(sender, text)`` posts and stores all of them in one
transaction, under one database lock held to the commit: the lock is what
makes ``seq`` and ``sender_count`` unique and the history read with them
complete, across every replica writing to the same database. It returns the
rows it stored and the rows stored just before them, from which every post of
the batch gets its answer (see :mod:`skns.messenger.answers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from ..errors import SknsError

# seq, sender, text, created_at (RFC 3339 text, UTC), sender_count
Row = tuple[int, str, str, str, int]
Post = tuple[str, str]  # sender, text


class StoreUnavailable(SknsError):
    """The database cannot be reached or refused the transaction; nothing was stored."""


class StoreTimeout(StoreUnavailable):
    """The database did not answer a transaction it was sent: it may have been stored."""


@dataclasses.dataclass(frozen=True, slots=True)
class Committed:
    """What one transaction stored, and the history just before it."""

    previous: list[Row]  # up to ``history - 1`` rows stored before the batch, oldest first
    new: list[Row]  # one row per post, in the order of the batch (ascending seq)


class Store(Protocol):
    kind: str  # "postgresql" or "sqlite"
    down: bool  # known to be down: requests are refused at once until it is back

    async def open(self) -> None:
        """Get ready; must not fail when the database is down (posts get 503 until it is up)."""

    async def close(self) -> None: ...

    async def commit(self, batch: Sequence[Post], history: int) -> Committed:
        """Store ``batch`` in one transaction; raise StoreUnavailable when it was not stored."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""

    async def rows(self) -> list[Row]:
        """Every stored row by ascending seq (for checks: tests and the benchmark)."""
