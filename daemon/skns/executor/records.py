"""The journal's record format, and replaying records into the unfinished events.

A journal segment is a sequence of records, each a 17-byte header and the body:

    magic b"\xfeSKJ" | kind: u8 | body length: u32 LE | CRC-32 of the body: u32 LE
    | CRC-32 of the 9 bytes before it (kind, length, body CRC): u32 LE | body

- ``A`` accepted: an orjson array of events ``[seq, account_id, event_id, payload]``
  (exactly the bytes the router sent, so accepting costs no re-encoding);
- ``D`` done and ``F`` failed: the seqs, packed u64 LE;
- ``H`` high-water: one u64, the highest seq ever accepted (written at the head
  of every compacted segment, so deduplication survives compaction).

The magic lets a reader find the next record after a damaged one (a flipped
byte, a bad sector): it scans forward for the magic and takes the first place
where a header and its body check out, so damage costs only the records it
touches. The header's own CRC tells a cut write from damage: an append cut
short by a crash leaves, at the very end, fewer bytes than a header or an intact
header whose body runs past the end of the file. That is a torn tail, never
acknowledged (acks wait for the fsync that covers the record); anything else
that fails its checks is damage.

Segments written before the magic existed (a 9-byte header: kind, length, body
CRC) are still read, the old way: up to the first record that fails its CRC.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from .. import jsonexact

MAGIC = b"\xfeSKJ"  # 0xfe is never a byte of UTF-8 text, so never inside an A body
HEADER = struct.Struct("<4sBIII")
_CHECKED = slice(len(MAGIC), len(MAGIC) + 9)  # the header bytes its own CRC covers
LEGACY_HEADER = struct.Struct("<BII")
ACCEPTED = ord("A")
DONE = ord("D")
FAILED = ord("F")
HIGH = ord("H")
KINDS = frozenset((ACCEPTED, DONE, FAILED, HIGH))

Wire = list[Any]  # [seq, account_id, event_id, payload]


def record(kind: int, body: bytes) -> bytes:
    checked = LEGACY_HEADER.pack(kind, len(body), zlib.crc32(body))
    return MAGIC + checked + struct.pack("<I", zlib.crc32(checked)) + body


def seqs_record(kind: int, seqs: Iterable[int]) -> bytes:
    return record(kind, array("Q", seqs).tobytes())


def high_record(seq: int) -> bytes:
    return record(HIGH, struct.pack("<Q", seq))


@dataclasses.dataclass
class Segment:
    """What reading one segment found."""

    records: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    # (offset, length) of each damaged stretch skipped: at least one record lost in each.
    damaged: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    torn: int = 0  # bytes at the end that are an append cut short (or, legacy, unreadable)
    legacy: bool = False  # written in the format before the magic


def _header(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(kind, body start, body end) of an intact header at ``offset``, else None."""
    if len(data) - offset < HEADER.size:
        return None
    magic, kind, length, _, header_crc = HEADER.unpack_from(data, offset)
    if magic != MAGIC or kind not in KINDS:
        return None
    checked = data[offset + _CHECKED.start : offset + _CHECKED.stop]
    if zlib.crc32(checked) != header_crc:
        return None
    start = offset + HEADER.size
    return kind, start, start + length


def _record_at(data: bytes, offset: int) -> tuple[int, bytes, int] | None:
    """(kind, body, end) of an intact record at ``offset``, else None."""
    header = _header(data, offset)
    if header is None:
        return None
    kind, start, end = header
    if end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body) != HEADER.unpack_from(data, offset)[3]:
        return None
    return kind, body, end


def _is_cut_short(data: bytes, offset: int) -> bool:
    """Whether the bytes from ``offset`` to the end are an append a crash cut short."""
    if len(data) - offset < HEADER.size:
        return True
    header = _header(data, offset)
    return header is not None and header[2] > len(data)


def scan(data: bytes) -> Segment:
    """Every intact record of a segment, the damaged stretches between them, the torn tail."""
    if data and data[0] in KINDS and _legacy_record_at(data, 0) is not None:
        return _scan_legacy(data)
    found = Segment()
    offset = 0
    bad = -1  # start of the damaged stretch being skipped
    size = len(data)
    while offset < size:
        intact = _record_at(data, offset)
        if intact is None:
            if bad < 0:
                bad = offset
            offset = data.find(MAGIC, offset + 1)
            if offset < 0:
                break
            continue
        if bad >= 0:
            found.damaged.append((bad, offset - bad))
            bad = -1
        kind, body, offset = intact
        found.records.append((kind, body))
    if bad >= 0:
        if _is_cut_short(data, bad):
            found.torn = size - bad
        else:
            found.damaged.append((bad, size - bad))
    return found


def _legacy_record_at(data: bytes, offset: int) -> tuple[int, bytes, int] | None:
    if len(data) - offset < LEGACY_HEADER.size:
        return None
    kind, length, crc = LEGACY_HEADER.unpack_from(data, offset)
    start = offset + LEGACY_HEADER.size
    end = start + length
    if kind not in KINDS or end > len(data):
        return None
    body = data[start:end]
    return (kind, body, end) if zlib.crc32(body) == crc else None


def _scan_legacy(data: bytes) -> Segment:
    """A segment of the old format: records up to the first that fails (no way to resync)."""
    found = Segment(legacy=True)
    offset = 0
    while (intact := _legacy_record_at(data, offset)) is not None:
        kind, body, offset = intact
        found.records.append((kind, body))
    found.torn = len(data) - offset
    return found


def _seqs(body: bytes) -> array:
    seqs = array("Q")
    seqs.frombytes(body)
    return seqs


class Replay:
    """Folds records, oldest first, into the unfinished events and the high-water seq."""

    def __init__(self) -> None:
        self.pending: dict[int, Wire] = {}
        self.high = 0

    def apply(self, kind: int, body: bytes) -> None:
        if kind == ACCEPTED:
            pending = self.pending
            for wire in jsonexact.loads(body):
                pending[wire[0]] = wire
                if wire[0] > self.high:
                    self.high = wire[0]
        elif kind in (DONE, FAILED):
            pop = self.pending.pop
            for seq in _seqs(body):
                pop(seq, None)
        elif kind == HIGH:
            self.high = max(self.high, struct.unpack("<Q", body)[0])

    def apply_all(self, records: Iterable[tuple[int, bytes]]) -> None:
        for kind, body in records:
            self.apply(kind, body)

    def unfinished(self) -> Iterator[Wire]:
        """The events to run again, in arrival order (so each account's order holds)."""
        for seq in sorted(self.pending):
            yield self.pending[seq]
