"""The worker pool on its own, in this process's event loop (real forked workers)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import psutil

from skns.tasks.digits import decimal_digits
from skns.tasks.pool import Pool
from skns.tasks.store import DONE, FAILED, TIMED_OUT, Task

from .conftest import LONG_JOB

Outcome = tuple[Task, str, bytes]


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 30)

    asyncio.run(bounded())


def task(number: int) -> Task:
    return Task(str(uuid.uuid4()), number, "hard", [])


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def success(t: Task) -> bytes:
    return b'{"type":"success","task_id":"%s","result":%s}' % (
        t.id.encode(),
        decimal_digits(math.factorial(t.number)),
    )


def test_jobs_run_and_their_frames_are_complete() -> None:
    async def main() -> None:
        outcomes: list[Outcome] = []
        pool = Pool("soft", 2, 5.0, 4, lambda *o: outcomes.append(o))
        pool.start()
        try:
            tasks = [task(n) for n in range(0, 300, 7)]
            for t in tasks:
                pool.submit(t)
            await until(lambda: len(outcomes) == len(tasks))
        finally:
            pool.close()
        assert {(t.id, state, frame) for t, state, frame in outcomes} == {
            (t.id, DONE, success(t)) for t in tasks
        }
        assert pool.stats()["done"] == len(tasks)

    run(main)


def test_jobs_behind_a_timed_out_one_are_requeued_not_lost() -> None:
    async def main() -> None:
        outcomes: list[Outcome] = []
        pool = Pool("hard", 1, 0.4, 3, lambda *o: outcomes.append(o))
        pool.start()
        try:
            first_pid = pool.pids()[0]
            long, a, b = task(LONG_JOB), task(5), task(6)
            for t in (long, a, b):
                pool.submit(t)  # all three go to the one worker at once
            await until(lambda: len(outcomes) == 3)
            assert pool.pids() != [first_pid]
        finally:
            pool.close()
        assert [(t, state) for t, state, _ in outcomes] == [(long, TIMED_OUT), (a, DONE), (b, DONE)]
        assert orjson.loads(outcomes[0][2])["result"] == "Timeout error"
        assert outcomes[1][2] == success(a) and outcomes[2][2] == success(b)
        assert pool.replaced == 1 and pool.timed_out == 1

    run(main)


def test_a_prefetched_job_gets_its_whole_limit_from_its_own_start() -> None:
    # Calibrate on this machine: each job takes t, the limit is 3 t, five jobs in a row 5 t.
    # Counted from when it was sent, the last job would time out.
    number = 60_000
    t0 = time.perf_counter()
    decimal_digits(math.factorial(number))
    single = time.perf_counter() - t0
    limit = max(0.1, 3 * single)

    async def main() -> None:
        outcomes: list[Outcome] = []
        pool = Pool("hard", 1, limit, 5, lambda *o: outcomes.append(o))
        pool.start()
        try:
            for _ in range(5):
                pool.submit(task(number))
            await until(lambda: len(outcomes) == 5)
        finally:
            pool.close()
        assert [state for _, state, _ in outcomes] == [DONE] * 5

    run(main)


def test_a_worker_that_dies_fails_its_job_and_is_replaced() -> None:
    async def main() -> None:
        outcomes: list[Outcome] = []
        pool = Pool("hard", 1, 30.0, 1, lambda *o: outcomes.append(o))
        pool.start()
        try:
            (pid,) = pool.pids()
            doomed = task(LONG_JOB)
            pool.submit(doomed)
            await until(lambda: pool.stats()["running"] == 1)
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
            await until(lambda: len(outcomes) == 1)
            assert outcomes[0][:2] == (doomed, FAILED)
            frame = orjson.loads(outcomes[0][2])
            assert frame["result"] == "Task failed" and frame["task_id"] == doomed.id
            after = task(7)
            pool.submit(after)
            await until(lambda: len(outcomes) == 2)
            assert outcomes[1] == (after, DONE, success(after))
            assert pool.replaced == 1 and pool.failed == 1
        finally:
            pool.close()

    run(main)


def test_close_kills_and_reaps_every_worker() -> None:
    pids: list[int] = []

    async def main() -> None:
        pool = Pool("hard", 2, 30.0, 1, lambda *o: None)
        pool.start()
        pids.extend(pool.pids())
        pool.submit(task(LONG_JOB))  # one of them busy
        await until(lambda: pool.stats()["running"] == 1)
        pool.close()

    run(main)
    assert len(pids) == 2
    for pid in pids:
        assert not psutil.pid_exists(pid)  # reaped: not even a zombie
