"""Which messages a TCP peer acknowledged: message frames by byte offset on the stream.

A message counts as sent once it is written to a sink connection, but written
is not received: a sink that dies leaves what sat in our socket's buffers, and
in the network, undelivered. The kernel knows how many bytes of the stream the
peer's TCP acknowledged (``tcpi_bytes_acked``, see :mod:`.writer`); this
ledger maps that figure back to messages. It records every write of the
connection in stream order: bytes that are no message (the HTTP upgrade
request, control frames) as a length, message frames as their serialized
lengths. A message is confirmed once every byte of its frame was acknowledged.
Only lengths are kept: the frames themselves would hold on to up to twice what
the socket buffers hold, as long as the sink is slow.

Confirmed batches are forgotten as the acknowledgements come in, so the ledger
holds only what is in flight: at most what the socket buffers hold.

Pure logic: no sockets, the caller passes the acknowledged byte count.
"""

from __future__ import annotations

import collections


class Ledger:
    """The message frames written to one connection, and how many its peer acknowledged."""

    __slots__ = ("_batches", "confirmed", "out", "recorded")

    def __init__(self) -> None:
        self.out = 0  # bytes written to the connection so far, messages or not
        self.recorded = 0  # message frames written
        self.confirmed = 0  # of those, wholly acknowledged (in forgotten batches)
        # (stream offset where the batch ends, its frames' lengths), oldest first.
        self._batches: collections.deque[tuple[int, list[int]]] = collections.deque()

    def __len__(self) -> int:
        """Batches held: written, not yet known to be acknowledged."""
        return len(self._batches)

    def other(self, size: int) -> None:
        """``size`` bytes that carry no message were written."""
        self.out += size

    def messages(self, frames: list[bytes]) -> None:
        """These message frames were written, in this order, right after what came before."""
        sizes = list(map(len, frames))
        self.out += sum(sizes)
        self._batches.append((self.out, sizes))
        self.recorded += len(sizes)

    def acknowledged(self, acked: int) -> int:
        """Messages wholly within the first ``acked`` bytes of the stream (all told)."""
        batches = self._batches
        while batches and batches[0][0] <= acked:
            self.confirmed += len(batches.popleft()[1])
        within = 0
        if batches:  # the first batch not wholly acknowledged: frame by frame
            end, sizes = batches[0]
            offset = end - sum(sizes)
            for size in sizes:
                offset += size
                if offset > acked:
                    break
                within += 1
        return self.confirmed + within

    def unconfirmed(self, acked: int) -> int:
        """Messages not wholly within the first ``acked`` bytes: never reached the peer."""
        return self.recorded - self.acknowledged(acked)
