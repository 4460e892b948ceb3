"""metrics.jsonl on a real filesystem that fills up: nothing raised, nothing torn, nothing lost."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from skns.metrics.output import Output, missing


def rows(n: int, start: int = 0) -> list[str]:
    return [json.dumps({"timestamp": i, "pad": "x" * 50}) for i in range(start, start + n)]


def content(path: Path) -> list[str]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-80:]!r}"
    lines = data.decode().splitlines()
    for text in lines:
        json.loads(text)  # not glued, not cut
    return lines


def test_full_disk_keeps_lines_and_writes_them_once_space_is_back(tiny_fs):
    fs = tiny_fs(64 * 1024)
    out = Output(fs.path / "metrics.jsonl", retry=0)
    out.write(rows(3))
    fs.fill()
    sent = rows(3)
    # Each batch of 60 lines (~4 KiB) outgrows the slack of the file's last page.
    for k in range(1, 4):
        batch = rows(60, start=k * 100)
        sent += batch
        out.write(batch)  # never raises
        assert content(out.path) == sent[: len(sent) - len(out.pending)]
    assert out.error is not None and out.pending
    assert out.condition().startswith("ENOSPC since ")
    assert f"{len(out.pending)} lines pending" in out.condition()
    assert out.status()["write_errors"] >= 1

    assert not out.flush()  # still full: stays pending
    fs.free()
    assert out.flush()
    assert content(out.path) == sent
    assert out.condition() is None and out.error is None
    assert out.lines_written == len(sent)
    out.close()


def test_a_write_cut_short_is_truncated_back_to_its_last_whole_line(tiny_fs):
    fs = tiny_fs(64 * 1024)
    out = Output(fs.path / "metrics.jsonl", retry=0)
    sent = rows(1200)  # about 90 KiB: more than the filesystem holds
    out.write(sent)
    on_disk = content(out.path)
    assert 0 < len(on_disk) < len(sent)
    assert on_disk == sent[: len(on_disk)]
    assert len(out.pending) == len(sent) - len(on_disk)
    os.truncate(out.path, 0)  # the operator makes room (the kept lines stay kept)
    assert out.flush()
    assert content(out.path) == sent[len(on_disk) :]
    out.close()


def test_after_a_failure_the_next_attempt_waits_for_the_retry_interval(tiny_fs):
    """A status poll or a closing window must not rewrite megabytes to a full disk each time."""
    fs = tiny_fs(16 * 1024)
    fs.fill()
    out = Output(fs.path / "metrics.jsonl", retry=0.5)
    out.write(rows(100))
    assert out.write_errors == 1
    fs.free()
    out.write(rows(1, start=100))  # queued, not tried: the disk was full half a second ago
    assert not out.flush()
    assert out.write_errors == 1 and len(out.pending) == 101
    time.sleep(0.6)
    assert out.flush()
    assert content(out.path) == rows(101)
    out.close()


def test_a_failed_fsync_keeps_the_whole_batch_and_writes_it_once_later(loop_fs):
    """A device error reported by fsync (not by write): the batch's durability is unknown,
    so it is cut from the file and written again once the device takes writes."""
    fs = loop_fs(1 << 20)
    out = Output(fs.path / "metrics.jsonl", retry=0)
    sent: list[str] = []
    for k in range(40):
        size = out.path.stat().st_size
        batch = [
            json.dumps({"timestamp": i, "pad": "x" * 500}) for i in range(k * 1000, k * 1000 + 500)
        ]
        sent += batch
        out.write(batch)
        if out.error is not None:
            break
    assert out.error is not None, "the device never failed"
    assert len(out.pending) == 500 and out.path.stat().st_size == size  # the batch cut whole
    fs.grow_backing(64 << 20)
    assert out.flush()
    assert content(out.path) == sent
    out.close()


def test_a_torn_tail_left_by_a_crash_is_cut_at_open(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"timestamp": 1}\n{"timestamp": 2}\n{"t')
    out = Output(path)
    out.write(['{"timestamp": 3}'])
    assert path.read_bytes() == b'{"timestamp": 1}\n{"timestamp": 2}\n{"timestamp": 3}\n'
    out.close()
    path.write_bytes(b"no newline at all")
    Output(path).close()
    assert path.read_bytes() == b""


def test_past_the_bound_the_oldest_lines_are_dropped_and_counted(tiny_fs):
    fs = tiny_fs(16 * 1024)
    fs.fill()
    out = Output(fs.path / "metrics.jsonl", max_pending=100, retry=0)
    sent = rows(130)
    for i in range(0, 130, 10):
        out.write(sent[i : i + 10])
    assert len(out.pending) == 100
    assert out.lines_dropped == 30
    assert "30 lines dropped" in out.condition()
    fs.free()
    assert out.flush()
    assert content(out.path) == sent[30:]
    out.close()


def test_an_output_that_cannot_be_opened_is_retried(tmp_path):
    blocker = tmp_path / "dir"
    blocker.write_text("a file where the output's directory should be")
    out = Output(blocker / "metrics.jsonl", retry=0)
    out.write(rows(2))
    assert out.condition().startswith(("ENOTDIR since", "EEXIST since"))
    assert len(out.pending) == 2
    blocker.unlink()
    assert out.flush()
    assert content(out.path) == rows(2)
    out.close()


def test_a_reopen_that_fails_keeps_writing_to_the_old_file_and_is_retried(tmp_path):
    path = tmp_path / "metrics.jsonl"
    out = Output(path, retry=0)
    out.write(rows(1))
    path.rename(tmp_path / "metrics.jsonl.1")  # logrotate
    path.mkdir()  # and something in the way of the new file
    out.reopen()
    out.write(rows(1, start=1))
    assert out.condition().startswith("EISDIR since ")
    assert content(tmp_path / "metrics.jsonl.1") == rows(2)  # nothing held back, nothing lost
    path.rmdir()
    out.write(rows(1, start=2))
    assert out.condition() is None
    assert content(path) == rows(1, start=2)
    assert content(tmp_path / "metrics.jsonl.1") == rows(2)
    out.close()


def test_new_files_are_not_world_readable(tmp_path):
    old = os.umask(0)
    try:
        out = Output(tmp_path / "sub" / "metrics.jsonl")
    finally:
        os.umask(old)
    assert out.path.stat().st_mode & 0o777 == 0o640
    assert out.path.parent.stat().st_mode & 0o777 == 0o750
    out.close()


def test_missing_lines_are_those_after_the_files_last():
    a = '{"timestamp": 10, "count_type": "10s", "A1_sum": 0, "A2_max": 0, "A3_min": 0, "count": 0}'
    b = '{"timestamp": 20, "count_type": "10s", "A1_sum": 0, "A2_max": 0, "A3_min": 0, "count": 0}'
    c = '{"timestamp": 20, "count_type": "60s", "A1_sum": 0, "A2_max": 0, "A3_min": 0, "count": 0}'
    row = json.loads
    assert missing([a, b, c], []) == [a, b, c]  # an empty file
    assert missing([a, b, c], [row(a)]) == [b, c]  # died after writing the first
    assert missing([a, b, c], [row(b)]) == [c]  # a write cut between two lines of one close
    assert missing([a, b, c], [row(c)]) == []  # all written before it died
    assert missing([b, c], [row(a)]) == [b, c]  # none of them written
    # A stop with the disk full between two lines of one close: the base line is in the
    # file, the longer interval's line of the same timestamp is held (and owed).
    assert missing([c], [row(b)]) == [c]
    later = '{"timestamp": 30, "count_type": "10s"}'
    assert missing([a, b, c], [row(later)]) == []  # the file is past them all
