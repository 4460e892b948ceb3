"""Group commit: who shares a transaction, and what a failure reaches."""

from __future__ import annotations

import asyncio

import pytest

from skns.messenger.batcher import GroupCommit

from .aio import run_async


class Recorder:
    """A fake transaction: records each batch; can be held open or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: set[str] = set()

    async def run(self, posts: list[str]) -> list[str]:
        self.batches.append(list(posts))
        await self.gate.wait()
        if self.fail & set(posts):
            raise RuntimeError("database gone")
        return [f"ok {p}" for p in posts]


@run_async
async def test_posts_waiting_during_a_transaction_share_the_next_one() -> None:
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.run, batch_max=100)
    rec.gate.clear()
    first = asyncio.ensure_future(group.submit("a"))
    await asyncio.sleep(0)  # "a" starts a transaction alone, at once
    rest = [asyncio.ensure_future(group.submit(p)) for p in "bcde"]
    await asyncio.sleep(0.01)
    assert rec.batches == [["a"]]
    rec.gate.set()
    assert await first == "ok a"
    assert await asyncio.gather(*rest) == ["ok b", "ok c", "ok d", "ok e"]
    assert rec.batches == [["a"], ["b", "c", "d", "e"]]
    assert (group.batches, group.posts, group.largest_batch) == (2, 5, 4)


@run_async
async def test_batch_max_splits_the_queue() -> None:
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.run, batch_max=2)
    rec.gate.clear()
    futures = [asyncio.ensure_future(group.submit(p)) for p in "abcde"]
    await asyncio.sleep(0)
    rec.gate.set()
    assert await asyncio.gather(*futures) == [f"ok {p}" for p in "abcde"]
    assert rec.batches == [["a", "b"], ["c", "d"], ["e"]]


@run_async
async def test_a_failed_transaction_fails_its_posts_only() -> None:
    rec = Recorder()
    rec.fail = {"b"}
    group: GroupCommit[str, str] = GroupCommit(rec.run, batch_max=100)
    rec.gate.clear()
    a = asyncio.ensure_future(group.submit("a"))
    await asyncio.sleep(0)
    bc = [asyncio.ensure_future(group.submit(p)) for p in "bc"]
    await asyncio.sleep(0)
    rec.gate.set()
    assert await a == "ok a"
    for future in bc:
        with pytest.raises(RuntimeError, match="database gone"):
            await future
    assert await group.submit("d") == "ok d"  # the next transaction is unaffected
    assert group.failed_batches == 1


@run_async
async def test_without_batching_each_post_runs_alone_and_concurrently() -> None:
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.run, batch_max=100, batching=False)
    rec.gate.clear()
    futures = [asyncio.ensure_future(group.submit(p)) for p in "abc"]
    await asyncio.sleep(0.01)
    assert rec.batches == [["a"], ["b"], ["c"]]  # all three in flight at once
    rec.gate.set()
    assert await asyncio.gather(*futures) == ["ok a", "ok b", "ok c"]
    assert (group.batches, group.largest_batch) == (3, 1)


@run_async
async def test_a_cancelled_request_does_not_break_its_batch() -> None:
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.run, batch_max=100)
    rec.gate.clear()
    a = asyncio.ensure_future(group.submit("a"))
    await asyncio.sleep(0)
    b = asyncio.ensure_future(group.submit("b"))
    c = asyncio.ensure_future(group.submit("c"))
    await asyncio.sleep(0)
    b.cancel()
    rec.gate.set()
    assert await a == "ok a"
    assert await c == "ok c"
    assert b.cancelled()


@run_async
async def test_close_waits_for_the_transaction_in_flight() -> None:
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.run, batch_max=100)
    rec.gate.clear()
    a = asyncio.ensure_future(group.submit("a"))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(group.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    rec.gate.set()
    await closing
    assert a.done() and a.result() == "ok a"


@run_async
async def test_delay_applies_under_load_only() -> None:
    loop = asyncio.get_running_loop()
    delay = 0.1
    gates = [asyncio.Event() for _ in range(4)]
    starts: list[tuple[list[str], float]] = []

    async def run(posts: list[str]) -> list[str]:
        starts.append((list(posts), loop.time()))
        await gates[len(starts) - 1].wait()
        return posts

    group: GroupCommit[str, str] = GroupCommit(run, batch_max=100, delay=delay)
    futures = [asyncio.ensure_future(group.submit("a"))]
    await asyncio.sleep(0)
    futures += [asyncio.ensure_future(group.submit(p)) for p in "bc"]
    await asyncio.sleep(0)
    released = loop.time()
    gates[0].set()
    await asyncio.sleep(0.01)
    # [b, c] went right after [a]: a batch of one is no sign of load.
    assert [p for p, _ in starts] == [["a"], ["b", "c"]]
    assert starts[1][1] - released < delay
    futures += [asyncio.ensure_future(group.submit(p)) for p in "de"]
    await asyncio.sleep(0)
    released = loop.time()
    gates[1].set()
    gates[2].set()
    await asyncio.gather(*futures)
    # After a batch of two, the next one waited and took everyone waiting.
    assert [p for p, _ in starts] == [["a"], ["b", "c"], ["d", "e"]]
    assert starts[2][1] - released >= delay * 0.9
    # Idle again: a lone post goes at once.
    gates[3].set()
    submitted = loop.time()
    assert await group.submit("f") == "f"
    assert starts[3][1] - submitted < delay
