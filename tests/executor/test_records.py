import struct
import zlib

import orjson

from skns.executor import records
from skns.executor.records import Replay


def accepted(*seqs: int) -> bytes:
    return records.record(records.ACCEPTED, orjson.dumps([[s, s % 3, None, s] for s in seqs]))


def legacy(kind: int, body: bytes) -> bytes:
    """A record in the format before the magic: kind, length, CRC, body."""
    return struct.pack("<BII", kind, len(body), zlib.crc32(body)) + body


def test_scan_reads_back_what_was_written() -> None:
    data = accepted(1, 2) + records.seqs_record(records.DONE, [1]) + records.high_record(9)
    found = records.scan(data)
    assert (found.damaged, found.torn, found.legacy) == ([], 0, False)
    assert [kind for kind, _ in found.records] == [records.ACCEPTED, records.DONE, records.HIGH]


def test_a_cut_append_is_a_torn_tail() -> None:
    whole = accepted(1, 2) + accepted(3)
    for cut in range(len(accepted(1, 2)) + 1, len(whole)):
        found = records.scan(whole[:cut])
        assert len(found.records) == 1
        assert found.torn == cut - len(accepted(1, 2))
        assert found.damaged == []


def test_every_flipped_byte_costs_only_its_own_record() -> None:
    before, middle, after = accepted(1), accepted(2, 3), records.seqs_record(records.DONE, [1])
    for i in range(len(middle)):
        damaged = bytearray(middle)
        damaged[i] ^= 0xFF
        found = records.scan(before + bytes(damaged) + after)
        assert [body for _, body in found.records] == [
            body for _, body in records.scan(before + after).records
        ], i
        assert found.damaged == [(len(before), len(middle))], i
        assert found.torn == 0


def test_damage_in_the_last_record_is_not_a_torn_tail() -> None:
    before, last = accepted(1), accepted(2)
    for i in range(len(last)):
        damaged = bytearray(last)
        damaged[i] ^= 0x01
        found = records.scan(before + bytes(damaged))
        assert len(found.records) == 1, i
        # A flip in the length field makes the body run past the end, but the header's
        # CRC shows the header itself is damaged: the record was whole.
        assert found.damaged == [(len(before), len(last))], i
        assert found.torn == 0, i


def test_garbage_between_records_is_skipped() -> None:
    found = records.scan(accepted(1) + b"\x00" * 100 + records.MAGIC + b"junk" + accepted(2))
    assert len(found.records) == 2
    assert found.damaged == [(len(accepted(1)), 108)]


def test_legacy_segments_are_still_read() -> None:
    body = orjson.dumps([[1, 0, None, 1]])
    data = legacy(records.HIGH, struct.pack("<Q", 5)) + legacy(records.ACCEPTED, body)
    found = records.scan(data + b"A\x05")
    assert found.legacy
    assert found.records == [(records.HIGH, struct.pack("<Q", 5)), (records.ACCEPTED, body)]
    assert found.torn == 2


def test_replay_keeps_unfinished_in_seq_order() -> None:
    replay = Replay()
    data = (
        accepted(3, 4, 5)
        + accepted(6)
        + records.seqs_record(records.DONE, [4])
        + records.seqs_record(records.FAILED, [6])
    )
    replay.apply_all(records.scan(data).records)
    assert [w[0] for w in replay.unfinished()] == [3, 5]
    assert replay.high == 6


def test_replay_of_a_compacted_segment_and_duplicates() -> None:
    replay = Replay()
    # An old segment, then a compacted one repeating the unfinished events.
    old = accepted(1, 2, 3) + records.seqs_record(records.DONE, [1])
    new = records.high_record(10) + accepted(2, 3) + records.seqs_record(records.DONE, [2])
    replay.apply_all(records.scan(old + new).records)
    assert [w[0] for w in replay.unfinished()] == [3]
    assert replay.high == 10
