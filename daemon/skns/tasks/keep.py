"""Task results and unfinished jobs across a restart of the task server.

At stop the server writes every task it holds to ``state_dir/tasks/tasks.jsonl``:
finished ones with their final frame and the wall-clock time it expires, queued
and running ones with their number (a job cut short by the stop runs again from
the start: jobs are pure functions of their number). At start it reads the file
once (and removes it, so that a crash later cannot replay it twice), forgets
what expired meanwhile and takes the rest up: outcomes fetchable by id until
their original expiry, jobs queued again. The store's memory cap applies as it
does to new results.

One JSON object per line, written with :func:`skns.files.write_atomic`: a
stop cut short leaves the previous file or none, never half of one. A kill -9 of
the task server loses what it held (as the metrics memfd would not: results can
be hundreds of megabytes, written once, at stop).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import jsonexact
from ..files import write_atomic
from .store import QUEUED, RUNNING, Task

log = logging.getLogger("skns.tasks.keep")

FILE = "tasks.jsonl"


@dataclasses.dataclass(frozen=True)
class Kept:
    """One task as saved: ``frame`` and ``expires`` (epoch seconds) once finished."""

    id: str
    number: int
    queue: str
    state: str
    frame: bytes = b""
    expires: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state not in (QUEUED, RUNNING)


def save(path: Path, tasks: Iterable[Task], wall_offset: float) -> int:
    """Write ``tasks``; ``wall_offset`` turns the store's clock into epoch seconds.
    Returns how many were written."""
    written = 0

    def lines() -> Iterator[bytes]:
        nonlocal written
        for task in tasks:
            row: dict[str, object] = {
                "id": task.id,
                "number": task.number,
                "queue": task.queue,
                "state": task.state,
            }
            if task.finished:
                row["frame"] = task.frame.decode()
                row["expires"] = task.expires + wall_offset
            written += 1
            yield jsonexact.dumps(row) + b"\n"

    write_atomic(path, lines())
    return written


def load(path: Path, now: float) -> list[Kept]:
    """The tasks saved at ``path`` that have not expired by ``now`` (epoch seconds), and
    remove the file. Unreadable lines are logged and skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    finally:
        path.unlink(missing_ok=True)
    kept: list[Kept] = []
    bad = 0
    for raw in data.splitlines():
        try:
            row = jsonexact.loads(raw)
            task = Kept(
                str(row["id"]),
                int(row["number"]),
                str(row["queue"]),
                str(row["state"]),
                str(row.get("frame", "")).encode(),
                float(row.get("expires", 0.0)),
            )
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if not task.finished or task.expires > now:
            kept.append(task)
    if bad:
        log.error("%s: %d unreadable line(s) skipped", path, bad)
    return kept
