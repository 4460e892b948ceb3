"""What the server and a worker process say to each other over their socket pair.

Server -> worker, one fixed-size record per job: the number (unsigned 64 bits)
and the task id (36 ASCII bytes), so the worker builds the whole success frame
and the server sends it on untouched. A worker runs its jobs one at a time, in
the order received; the server may send the next ones before the first ends.

Worker -> server, one record per job, in the same order: a header (status,
CLOCK_MONOTONIC nanoseconds when the job ended, payload length) and the
payload: the success frame, or for a failure a short text saying why. The end
time is the start time of the next job already waiting in the worker, from
which the server counts that job's time limit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

JOB = struct.Struct("<Q36s")
HEADER = struct.Struct("<BQQ")

OK = 0
FAILED = 1


def job(number: int, task_id: str) -> bytes:
    return JOB.pack(number, task_id.encode())


def result(status: int, ended_ns: int, payload: bytes) -> bytes:
    return HEADER.pack(status, ended_ns, len(payload)) + payload


class ResultReader:
    """Splits the worker's byte stream into (status, ended_ns, payload) records."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        size = HEADER.size
        while len(buf) >= size:
            status, ended_ns, length = HEADER.unpack_from(buf)
            end = size + length
            if len(buf) < end:
                break
            payload = bytes(buf[size:end])
            del buf[:end]
            yield status, ended_ns, payload

    @property
    def buffered(self) -> int:
        return len(self._buf)
