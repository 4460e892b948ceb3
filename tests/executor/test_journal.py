import asyncio
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from helpers import TinyFs
from skns import jsonexact
from skns.executor import records
from skns.executor.journal import QUARANTINE, Journal
from skns.executor.records import Replay, Wire


class Owner:
    """Stands in for a shard: holds the unfinished events and records the acks."""

    def __init__(self) -> None:
        self.pending: dict[int, Wire] = {}
        self.high = 0
        self.acks: list[int] = []

    def journal(self, directory: Path, compact_bytes: int = 1 << 20) -> Journal:
        return Journal(
            directory,
            fsync=True,
            interval=0.0,
            compact_bytes=compact_bytes,
            on_durable=self.acks.append,
            snapshot=lambda: (list(self.pending.values()), self.high),
            pending_count=lambda: len(self.pending),
        )

    def accept(self, journal: Journal, *wires: Wire) -> None:
        for wire in wires:
            self.pending[wire[0]] = wire
        self.high = wires[-1][0]
        journal.accept(jsonexact.dumps(list(wires)), self.high)

    def finish(self, journal: Journal, seq: int, ok: bool = True) -> None:
        del self.pending[seq]
        (journal.done if ok else journal.failed)(seq)


def wire(seq: int, account: int | str = 1) -> Wire:
    return [seq, account, f"e{seq}", {"n": seq}]


async def reopen(directory: Path) -> Replay:
    journal = Owner().journal(directory)
    replay = await journal.open()
    await journal.close()
    return replay


def test_unfinished_events_come_back_in_order(tmp_path: Path) -> None:
    async def main() -> Replay:
        owner = Owner()
        journal = owner.journal(tmp_path)
        assert (await journal.open()).pending == {}
        owner.accept(journal, wire(1, "a"), wire(2, "b"))
        owner.accept(journal, wire(3, "a"))
        owner.finish(journal, 1)
        owner.finish(journal, 2, ok=False)
        await journal.close()
        return await reopen(tmp_path)

    replay = asyncio.run(main())
    assert list(replay.unfinished()) == [wire(3, "a")]
    assert replay.high == 3


def test_big_integers_survive_replay_and_compaction(tmp_path: Path) -> None:
    big = [7, "a", 2**70 + 1, {"probe": -(2**64) - 1}]  # no double holds these exactly

    async def main() -> None:
        owner = Owner()
        journal = owner.journal(tmp_path)
        await journal.open()
        owner.accept(journal, big)
        await journal.close()

    asyncio.run(main())
    assert list(asyncio.run(reopen(tmp_path)).unfinished()) == [big]  # read from the A record
    assert list(asyncio.run(reopen(tmp_path)).unfinished()) == [big]  # from the compacted one


def test_acks_follow_fsync_and_group_commit(tmp_path: Path) -> None:
    async def main() -> tuple[Owner, Journal]:
        owner = Owner()
        journal = owner.journal(tmp_path)
        await journal.open()
        for seq in range(1, 1001):  # all in one loop iteration: they share writes
            owner.accept(journal, wire(seq, seq % 10))
        assert owner.acks == []  # nothing is acked before its fsync
        for _ in range(100):
            await asyncio.sleep(0.01)
            if owner.acks and owner.acks[-1] == 1000:
                break
        await journal.close()
        return owner, journal

    owner, journal = asyncio.run(main())
    assert owner.acks[-1] == 1000
    assert journal.writes <= 2  # 1000 events, one or two fsyncs


def fill_and_finish(directory: Path, keep: set[int], small: int) -> Journal:
    """Accept 3000 events (about 150 KB of journal), finish all but ``keep``.

    Returns once the journal is under ``small`` bytes (or after 2 s).
    """

    async def main() -> Journal:
        owner = Owner()
        journal = owner.journal(directory, compact_bytes=65536)
        await journal.open()
        for seq in range(1, 3001):
            owner.accept(journal, wire(seq, seq % 7))
            if seq % 100 == 0:
                await asyncio.sleep(0)
        for seq in range(1, 3001):
            if seq not in keep:
                owner.finish(journal, seq)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if journal.writes > 1 and journal.size < small:
                break
        await journal.close()
        return journal

    return asyncio.run(main())


def test_compaction_keeps_only_unfinished(tmp_path: Path) -> None:
    journal = fill_and_finish(tmp_path, {1000, 2000, 3000}, 65536)
    assert journal.compactions >= 1  # passed 64 KiB while accepting
    assert journal.size < 65536
    assert len(list(tmp_path.glob("journal-*.log"))) == 1
    replay = asyncio.run(reopen(tmp_path))
    assert [w[0] for w in replay.unfinished()] == [1000, 2000, 3000]
    assert replay.high == 3000  # kept through compaction, for deduplication


def test_idle_journal_shrinks(tmp_path: Path) -> None:
    journal = fill_and_finish(tmp_path, set(), 100)
    assert journal.size < 100  # just the high-water record
    replay = asyncio.run(reopen(tmp_path))
    assert replay.pending == {}
    assert replay.high == 3000


def write_events(directory: Path, *frames: list[int]) -> Path:
    """A journal holding one A record per frame of seqs; returns its segment."""

    async def write() -> None:
        owner = Owner()
        journal = owner.journal(directory)
        await journal.open()
        for seqs in frames:
            owner.accept(journal, *(wire(seq) for seq in seqs))
            await asyncio.sleep(0.05)  # its own write: one record per frame
        await journal.close()

    asyncio.run(write())
    (segment,) = directory.glob("journal-*.log")
    return segment


async def reopen_journal(directory: Path) -> tuple[Replay, Journal]:
    journal = Owner().journal(directory)
    replay = await journal.open()
    await journal.close()
    return replay, journal


def test_torn_tail_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segment = write_events(tmp_path, [1, 2])
    whole = records.record(records.ACCEPTED, orjson.dumps([wire(3)]))
    with segment.open("ab") as f:
        f.write(whole[: len(whole) - 3])  # the crash cut the last append
    replay, journal = asyncio.run(reopen_journal(tmp_path))
    assert [w[0] for w in replay.unfinished()] == [1, 2]
    assert "ignoring" in caplog.text and "torn tail" in caplog.text
    assert (journal.damaged, journal.quarantined) == (0, 0)
    assert not (tmp_path / QUARANTINE).exists()
    # Reopening compacted the journal: the torn bytes are gone for good.
    assert [w[0] for w in asyncio.run(reopen(tmp_path)).unfinished()] == [1, 2]


def test_a_damaged_record_is_skipped_counted_and_its_segment_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment = write_events(tmp_path, [1, 2], [3], [4, 5])
    data = bytearray(segment.read_bytes())
    found = records.scan(bytes(data))
    assert [kind for kind, _ in found.records] == [records.HIGH] + [records.ACCEPTED] * 3
    first = records.record(records.ACCEPTED, orjson.dumps([wire(1), wire(2)]))
    second = len(records.high_record(0)) + len(first)  # where the record of seq 3 starts
    data[second + 20] ^= 0xFF  # a byte of its body
    segment.write_bytes(bytes(data))
    replay, journal = asyncio.run(reopen_journal(tmp_path))
    assert [w[0] for w in replay.unfinished()] == [1, 2, 4, 5]  # only seq 3 is lost
    assert journal.damaged == 1
    assert journal.quarantined == 1
    assert (tmp_path / QUARANTINE / segment.name).read_bytes() == bytes(data)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "damaged record at offset" in errors[0].getMessage()
    assert "torn tail" not in caplog.text
    # The next start finds a clean journal; the damaged copy stays.
    replay, journal = asyncio.run(reopen_journal(tmp_path))
    assert [w[0] for w in replay.unfinished()] == [1, 2, 4, 5]
    assert (journal.damaged, journal.quarantined) == (0, 1)


def test_damage_at_the_end_of_an_older_segment_is_not_a_torn_tail(tmp_path: Path) -> None:
    segment = write_events(tmp_path, [1], [2])
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # the last record of a segment a newer one follows
    segment.write_bytes(bytes(data))
    newer = tmp_path / "journal-000000000009.log"
    newer.write_bytes(records.high_record(2))
    replay, journal = asyncio.run(reopen_journal(tmp_path))
    assert [w[0] for w in replay.unfinished()] == [1]
    assert journal.damaged == 1
    assert (tmp_path / QUARANTINE / segment.name).exists()


def test_an_old_format_journal_is_read_and_rewritten(tmp_path: Path) -> None:
    def legacy(kind: int, body: bytes) -> bytes:
        return struct.pack("<BII", kind, len(body), zlib.crc32(body)) + body

    segment = tmp_path / "journal-000000000004.log"
    segment.write_bytes(
        legacy(records.HIGH, struct.pack("<Q", 7))
        + legacy(records.ACCEPTED, orjson.dumps([wire(5), wire(6)]))
        + legacy(records.DONE, struct.pack("<Q", 5))
    )
    replay, journal = asyncio.run(reopen_journal(tmp_path))
    assert [w[0] for w in replay.unfinished()] == [6]
    assert replay.high == 7
    assert journal.damaged == 0
    (rewritten,) = tmp_path.glob("journal-*.log")
    assert rewritten.read_bytes().startswith(records.MAGIC)


def test_a_write_error_is_reported_and_nothing_acked(tmp_path: Path) -> None:
    async def main() -> tuple[BaseException, list[int]]:
        owner = Owner()
        journal = owner.journal(tmp_path)
        await journal.open()
        # The disk goes away under the journal (as with EIO or a full disk).
        os.close(journal._fd)
        owner.accept(journal, wire(1))
        error = await asyncio.wait_for(journal.failure(), 5)
        journal._fd = -1
        await journal.close()
        return error, owner.acks

    error, acks = asyncio.run(main())
    assert isinstance(error, OSError)
    assert acks == []  # the shard must not ack what it could not write


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def big(seq: int) -> Wire:
    """An event larger than a page: the slack of the segment's last page cannot take it."""
    return [seq, 1, f"e{seq}", {"pad": "x" * 5000}]


def test_a_full_disk_holds_the_acks_back_until_space_is_back(
    tiny_fs: Callable[[int], TinyFs],
) -> None:
    """ENOSPC is not fatal: nothing more is acked, no half record is left in the
    segment, and once space is back the held events are written and acked."""
    fs = tiny_fs(64 * 1024)
    directory = fs.path / "shard"

    async def main() -> tuple[list[int], Journal]:
        owner = Owner()
        journal = owner.journal(directory)
        await journal.open()
        owner.accept(journal, wire(1))
        await journal.sync()
        fs.fill()
        owner.accept(journal, *(big(seq) for seq in range(2, 10)))  # 40 KB
        await wait_until(lambda: journal.error == "ENOSPC")
        await journal.sync()  # returns: the disk is full
        await asyncio.sleep(0.3)
        assert owner.acks == [1]
        for segment in directory.glob("journal-*.log"):  # a write cut short was cut back
            found = records.scan(segment.read_bytes())
            assert not found.torn and not found.damaged, segment
        assert journal.write_errors >= 1
        fs.free()
        await wait_until(lambda: owner.acks[-1] == 9)
        assert journal.error is None
        await journal.close()
        return owner.acks, journal

    asyncio.run(main())
    replay, journal = asyncio.run(reopen_journal(directory))
    assert [w[0] for w in replay.unfinished()] == list(range(1, 10))
    assert journal.damaged == 0


def test_a_start_on_a_full_disk_appends_to_the_newest_segment(
    tiny_fs: Callable[[int], TinyFs],
) -> None:
    """The start-up compaction needs room for a copy; without it the journal opens on
    the segment it has, and every event is still there at the next start."""
    fs = tiny_fs(64 * 1024)
    directory = fs.path / "shard"

    async def first() -> None:
        owner = Owner()
        journal = owner.journal(directory)
        await journal.open()
        owner.accept(journal, *(wire(seq) for seq in range(1, 30)))
        await journal.sync()
        await journal.close()

    async def second() -> list[int]:
        owner = Owner()
        journal = owner.journal(directory)
        replay = await journal.open()  # no room for the compacted copy
        assert [w[0] for w in replay.unfinished()] == list(range(1, 30))
        owner.pending = {w[0]: w for w in replay.unfinished()}
        owner.high = replay.high
        owner.accept(journal, big(30))
        await wait_until(lambda: journal.error == "ENOSPC")
        fs.free()
        await wait_until(lambda: owner.acks and owner.acks[-1] == 30)
        owner.finish(journal, 1)
        await journal.close()
        return owner.acks

    asyncio.run(first())
    fs.fill()
    asyncio.run(second())
    replay, journal = asyncio.run(reopen_journal(directory))
    assert [w[0] for w in replay.unfinished()] == list(range(2, 31))
    assert journal.damaged == 0


def test_a_journal_that_filled_the_disk_itself_compacts_its_way_out(
    tiny_fs: Callable[[int], TinyFs],
) -> None:
    """Finished events fill the disk (the size limit not reached): the first write that
    fails compacts the journal down to its unfinished events already written (the one
    held would not fit), and the held one goes out."""
    fs = tiny_fs(128 * 1024)
    directory = fs.path / "shard"

    async def main() -> int:
        owner = Owner()
        journal = owner.journal(directory, compact_bytes=1 << 30)
        await journal.open()
        seq = 0
        while True:
            seq += 1
            owner.accept(journal, big(seq))
            await journal.sync()
            if journal.error is not None:
                break  # this one unfinished: its record waits in the buffer
            owner.finish(journal, seq)
        await wait_until(lambda: journal.error is None and owner.acks[-1] == seq)
        assert journal.compactions == 1
        await journal.close()
        return seq

    seq = asyncio.run(main())
    replay, journal = asyncio.run(reopen_journal(directory))
    assert [w[2] for w in replay.unfinished()] == [f"e{seq}"] and journal.damaged == 0
