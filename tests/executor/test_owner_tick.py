from __future__ import annotations

import asyncio

from skns.executor.owner import tick


def test_partitions_started_apart_wake_on_the_same_tick() -> None:
    # Their renewals and commits then go out in one write (the idle shards' CPU).
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        woke: list[float] = []

        async def one(delay: float) -> None:
            await asyncio.sleep(delay)
            await tick(0.5)
            woke.append(loop.time())

        await asyncio.sleep(0.5 - loop.time() % 0.5)  # start just after a tick
        await asyncio.gather(one(0.0), one(0.2))
        return woke

    first, second = asyncio.run(main())
    assert abs(first - second) < 0.1  # 0.2 apart if each slept a whole interval
