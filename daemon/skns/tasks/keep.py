"""Task results and unfinished jobs across a restart of the task server: the row format.

A task is one JSON object per line: ``id``, ``number``, ``queue`` and ``state``;
a finished one adds ``expires`` (wall-clock epoch seconds) and ``frame``, its final
frame, or no ``frame`` when it was too big to write: jobs are pure functions of
their number, so such a result is computed again (:attr:`Kept.recompute`).

Two files use these rows. At a clean stop the server writes every task it holds to
``state_dir/tasks/tasks.jsonl`` with :func:`save` (:func:`skns.files.write_atomic`:
a stop cut short leaves the previous file or none, never half of one), frames
whole. While it runs, the journal (:mod:`skns.tasks.journal`) appends a row per
accepted job and per outcome, so that a kill -9 loses nothing acknowledged. At
start :func:`load` reads both: a later row of an id replaces an earlier one (the
outcome its job's row, the clean-stop file the journal it was written after),
expired outcomes are forgotten, and the rest is taken up: outcomes fetchable by id
until their original expiry, jobs queued again in their original order (a job cut
short runs again from the start). The store's memory cap applies as it does to
new results.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from ..files import write_atomic
from .protocol import QUEUES
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

    @property
    def recompute(self) -> bool:
        """Finished, but its result was too big to keep: it runs again."""
        return self.finished and not self.frame


def row(task: Task, wall_offset: float, frame: bool = True) -> bytes:
    """One line for ``task``; ``wall_offset`` turns the store's clock into epoch seconds.
    ``frame=False`` leaves a finished task's frame out: it is computed again if needed."""
    fields: dict[str, object] = {
        "id": task.id,
        "number": task.number,
        "queue": task.queue,
        "state": task.state,
    }
    if task.finished:
        fields["expires"] = task.expires + wall_offset
        if frame:
            fields["frame"] = task.frame.decode()
    # Plain orjson, not jsonexact: every number here fits 64 bits (max_number < 2**64), and
    # the journal writes a row per job and per outcome.
    return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)


def save(path: Path, tasks: Iterable[Task], wall_offset: float) -> int:
    """Write ``tasks`` (see :func:`row`). Returns how many were written."""
    written = 0

    def lines() -> Iterator[bytes]:
        nonlocal written
        for task in tasks:
            written += 1
            yield row(task, wall_offset)

    write_atomic(path, lines())
    return written


def load(paths: Iterable[Path], now: float) -> list[Kept]:
    """The tasks saved in ``paths`` (missing ones are nothing), read in that order, a later
    row of an id replacing an earlier one, without those expired by ``now`` (epoch
    seconds): unfinished ones (and results to compute again) in the order they were first
    written, then outcomes by expiry, oldest first. Unreadable lines (a torn last line of a
    journal killed mid-write) are logged and skipped."""
    tasks: dict[str, Kept] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        bad = 0
        for raw in data.splitlines():
            try:
                task = _parse(raw)
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            tasks[task.id] = task
        if bad:
            log.warning("%s: %d unreadable line(s) skipped", path, bad)
    live = [t for t in tasks.values() if not t.finished or t.expires > now]
    return [t for t in live if not t.finished or t.recompute] + sorted(
        (t for t in live if t.finished and not t.recompute), key=lambda t: t.expires
    )


def _parse(raw: bytes) -> Kept:
    fields = orjson.loads(raw)
    if fields["queue"] not in QUEUES:
        raise ValueError(f"no queue {fields['queue']!r}")
    number = fields["number"]
    if type(number) is not int:  # orjson reads an integer past 64 bits as a float
        raise ValueError(f"number {number!r} is not an integer")
    return Kept(
        str(fields["id"]),
        number,
        str(fields["queue"]),
        str(fields["state"]),
        str(fields.get("frame", "")).encode(),
        float(fields.get("expires", 0.0)),
    )
