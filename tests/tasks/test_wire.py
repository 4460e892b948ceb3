"""The server <-> worker records."""

from __future__ import annotations

from skns.tasks import wire


def test_a_job_record_has_a_fixed_size() -> None:
    record = wire.job(2**64 - 1, "0" * 36)
    assert len(record) == wire.JOB.size
    assert wire.JOB.unpack(record) == (2**64 - 1, b"0" * 36)


def test_results_split_at_any_chunk_boundary() -> None:
    stream = (
        wire.result(wire.OK, 1, b"first")
        + wire.result(wire.FAILED, 2, b"MemoryError")
        + wire.result(wire.OK, 3, b"x" * 100_000)
    )
    expected = [
        (wire.OK, 1, b"first"),
        (wire.FAILED, 2, b"MemoryError"),
        (wire.OK, 3, b"x" * 100_000),
    ]
    for chunk in (1, 7, 17, 4096, len(stream)):
        reader = wire.ResultReader()
        got = []
        for i in range(0, len(stream), chunk):
            got.extend(reader.feed(stream[i : i + chunk]))
        assert got == expected
        assert reader.buffered == 0


def test_an_incomplete_record_waits() -> None:
    reader = wire.ResultReader()
    record = wire.result(wire.OK, 5, b"payload")
    assert list(reader.feed(record[:-1])) == []
    assert reader.buffered == len(record) - 1
    assert list(reader.feed(record[-1:])) == [(wire.OK, 5, b"payload")]
