"""Turn what one transaction stored into the answer of every post in it.

Post ``i`` of a batch is answered with the ``history`` newest rows up to and
including its own, oldest first: the tail of ``previous + new[: i + 1]``. Each
row is serialised once per batch and the answers are joined from those
pieces, so a batch of n posts costs n + history - 1 row encodings, not 10 n.
"""

from __future__ import annotations

import orjson

from .store import Committed, Row

HISTORY = 10  # messages per answer


def encode_row(row: Row) -> bytes:
    seq, sender, text, created_at, sender_count = row
    return orjson.dumps(
        {
            "seq": seq,
            "sender": sender,
            "text": text,
            "created_at": created_at,
            "sender_count": sender_count,
        }
    )


def answer_bodies(committed: Committed, history: int = HISTORY) -> list[bytes]:
    """One JSON body ``{"messages": [...]}`` per new row, in batch order."""
    pieces = [encode_row(r) for r in committed.previous[-(history - 1) :]] if history > 1 else []
    offset = len(pieces)
    pieces.extend(encode_row(r) for r in committed.new)
    bodies = []
    for i in range(offset, len(pieces)):
        window = pieces[max(0, i - history + 1) : i + 1]
        bodies.append(b'{"messages":[' + b",".join(window) + b"]}")
    return bodies
