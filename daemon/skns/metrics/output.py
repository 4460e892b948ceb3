"""The append-only ``metrics.jsonl`` file."""

from __future__ import annotations

import json
import os
from pathlib import Path


class Output:
    """Appends lines; flushes each batch and fsyncs it (one batch per closed window).

    ``reopen`` follows a rename (logrotate): new lines go to a new file at the path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines_written = 0
        self._fd = -1
        self.reopen()

    def reopen(self) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        data = "".join(f"{text}\n" for text in lines).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.lines_written += len(lines)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def last_lines(path: Path, n: int) -> list[dict[str, object]]:
    """The last ``n`` parseable lines of the file (reads only its tail)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            chunk = 4096
            data = b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(chunk, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
                chunk *= 2
    except FileNotFoundError:
        return []
    rows: list[dict[str, object]] = []
    for raw in data.splitlines()[-n:] if n else []:
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
