import orjson

from skns.executor import records
from skns.executor.records import Replay


def accepted(*seqs: int) -> bytes:
    return records.record(records.ACCEPTED, orjson.dumps([[s, s % 3, None, s] for s in seqs]))


def test_scan_reads_back_what_was_written() -> None:
    data = accepted(1, 2) + records.seqs_record(records.DONE, [1]) + records.high_record(9)
    found, end = records.scan(data)
    assert end == len(data)
    assert [kind for kind, _ in found] == [records.ACCEPTED, records.DONE, records.HIGH]


def test_scan_stops_at_a_torn_tail() -> None:
    whole = accepted(1, 2) + accepted(3)
    for cut in range(len(accepted(1, 2)) + 1, len(whole)):
        found, end = records.scan(whole[:cut])
        assert len(found) == 1
        assert end == len(accepted(1, 2))


def test_scan_stops_at_a_corrupt_record() -> None:
    first = accepted(1)
    second = bytearray(accepted(2))
    second[-1] ^= 0xFF
    found, end = records.scan(first + bytes(second) + accepted(3))
    assert len(found) == 1
    assert end == len(first)


def test_replay_keeps_unfinished_in_seq_order() -> None:
    replay = Replay()
    data = (
        accepted(3, 4, 5)
        + accepted(6)
        + records.seqs_record(records.DONE, [4])
        + records.seqs_record(records.FAILED, [6])
    )
    replay.apply_all(records.scan(data)[0])
    assert [w[0] for w in replay.unfinished()] == [3, 5]
    assert replay.high == 6


def test_replay_of_a_compacted_segment_and_duplicates() -> None:
    replay = Replay()
    # An old segment, then a compacted one repeating the unfinished events.
    old = accepted(1, 2, 3) + records.seqs_record(records.DONE, [1])
    new = records.high_record(10) + accepted(2, 3) + records.seqs_record(records.DONE, [2])
    replay.apply_all(records.scan(old + new)[0])
    assert [w[0] for w in replay.unfinished()] == [3]
    assert replay.high == 10
