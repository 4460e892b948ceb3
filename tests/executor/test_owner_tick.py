from __future__ import annotations

import asyncio

from skns.executor.owner import IDLE_TRIM, TRIM_INTERVAL, Ticker, trim_due


def test_partitions_started_apart_wake_on_the_same_tick_of_one_timer() -> None:
    # Their renewals and commits then go out in one write (the idle shards' CPU).
    async def main() -> tuple[list[float], list[int]]:
        loop = asyncio.get_running_loop()
        ticker = Ticker()
        woke: list[float] = []
        timers: list[int] = []

        async def one(delay: float) -> None:
            await asyncio.sleep(delay)
            waiting = asyncio.ensure_future(ticker.tick(0.5))
            await asyncio.sleep(0)
            timers.append(ticker.timers)
            await waiting
            woke.append(loop.time())

        await asyncio.sleep(0.5 - loop.time() % 0.5)  # start just after a tick
        await asyncio.gather(one(0.0), one(0.2))
        return woke, timers

    (first, second), timers = asyncio.run(main())
    assert abs(first - second) < 0.1  # 0.2 apart if each slept a whole interval
    assert timers == [1, 1]  # the second waits on the first one's timer


def test_a_waiter_cancelled_leaves_the_others_waiting_for_the_tick() -> None:
    async def main() -> bool:
        ticker = Ticker()
        cancelled = asyncio.ensure_future(ticker.tick(0.2))
        other = asyncio.ensure_future(ticker.tick(0.2))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait_for(other, 1.0)
        return cancelled.cancelled() and ticker.timers == 0

    assert asyncio.run(main())


def test_a_busy_partition_is_purged_every_trim_interval_an_idle_one_soon() -> None:
    now = 1000.0
    # Events flowing (one delivered 50 ms ago), none unfinished at this tick, purged 1.5 s
    # ago: not again yet (it was, every second, when "nothing unfinished" counted as idle).
    assert not trim_due(now, 500, 400, now - 1.5, now - 0.05, 0)
    assert trim_due(now, 500, 400, now - TRIM_INTERVAL, now - 0.05, 3)
    # Nothing delivered for IDLE_TRIM s and nothing unfinished: purged now; not with events
    # still unfinished, nor twice within IDLE_TRIM, nor with nothing new below the watermark.
    assert trim_due(now, 500, 400, now - 5.0, now - IDLE_TRIM, 0)
    assert not trim_due(now, 500, 400, now - 5.0, now - IDLE_TRIM, 1)
    assert not trim_due(now, 500, 400, now - 0.5, now - 5.0, 0)
    assert not trim_due(now, 500, 500, now - TRIM_INTERVAL, now - 5.0, 0)
