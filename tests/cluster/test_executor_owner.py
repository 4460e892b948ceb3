"""A partition owner in this process, on a real 3-node cluster: what it does when one of a
partition's own loops dies, when its consumer is deleted under an open pull, and when its
consumer answers every pull and delivers nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.js import api

from skns import config, jsonexact
from skns.cluster.natscluster import NatsCluster
from skns.executor import jetstream, layout
from skns.executor import owner as owner_module
from skns.executor.clusterhosts import tables
from skns.executor.owner import Owner, Partition
from skns.executor.pull import Reader
from skns.ports import free_port


@pytest.fixture
def settings(nats_cluster: NatsCluster, tmp_path: Path) -> config.Settings:
    return config.parse(
        tables(tmp_path, nats_cluster, "solo", free_port(), {"replicas": 1}, {}, {}),
        tmp_path / "test.toml",
    )


async def until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@asynccontextmanager
async def run_partition(
    settings: config.Settings, number: int
) -> AsyncIterator[tuple[Owner, Partition]]:
    """Partition ``number`` run by an owner of this process, its first pull open (a partition
    of its own per test: one left to its lease's lapse would hold up the next test 3 s)."""
    owner = Owner(settings, 0)
    owner.directory.mkdir(parents=True)  # its handler's records
    stop = asyncio.Event()
    if not (await owner.conn.open(stop) and await owner.lean.open(stop)):
        raise RuntimeError("not connected")
    partition: Partition | None = None
    try:
        buckets = await jetstream.set_up(owner.conn, settings.cluster, create=True)
        await layout.agree(owner.conn.admin, buckets, settings.cluster, settings.path, True)
        if not await owner._set_up(stop):
            raise RuntimeError("not set up")
        partition = Partition(owner, number)
        if not await partition.lease.take():
            raise RuntimeError("lease not taken")
        owner.partitions[number] = partition
        if not await partition.open():
            raise RuntimeError("not opened")
        if not await until(lambda: partition.reader is not None and owner.pulls > 0, 10):
            raise RuntimeError("no pull")
        await asyncio.sleep(0.2)  # the pull request at its consumer
        yield owner, partition
    finally:
        if partition is not None and number in owner.partitions and not partition.leaving:
            await partition.close(graceful=True)
        await owner.lean.close()
        await owner.conn.close()


def stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (state T)."""
    tasks = Path(f"/proc/{pid}/task")
    return all(
        (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for task in tasks.iterdir()
    )


async def publish(partition: Partition, account: str, count: int) -> int:
    """``count`` events of ``account`` on ``partition``'s subject, as a router writes them;
    the last one's sequence."""
    seq = 0
    for i in range(count):
        data = jsonexact.dumps([account, f"{account}-{i}", i])
        seq = (await partition.owner.conn.js.publish(partition.subject, data)).seq
    return seq


def test_a_partition_whose_loop_dies_is_stopped_not_kept_idle(settings: config.Settings) -> None:
    # Its lease renewed and nothing pulled (or nothing committed) would hold the partition
    # for good with /health at 200; stopped, its lease lapses and it runs again.
    async def scenario() -> tuple[int, bool, bool, list[str]]:
        async with run_partition(settings, 0) as (owner, partition):
            await asyncio.sleep(0.3)
            if owner.loop_failures or partition.leaving:
                raise RuntimeError("stopped before its loop was broken")
            partition.progress = None  # type: ignore[assignment]  # its committer's next turn fails
            await until(lambda: partition.number not in owner.partitions, 5)
            ended = [t.get_coro().__qualname__ for t in partition.tasks if t.done()]
            return (
                owner.loop_failures,
                partition.leaving,
                partition.number in owner.partitions,
                ended,
            )

    failures, leaving, still_held, ended = asyncio.run(scenario())
    assert failures == 1
    assert leaving and not still_held
    assert len(ended) == 3  # the other two loops were stopped with it


def test_a_consumer_deleted_under_an_open_pull_is_made_again_at_once(
    settings: config.Settings,
) -> None:
    # The server ends the open pull with a 409 (Consumer Deleted); a pull sent to the deleted
    # consumer after it gets no answer at all, so the partition waited for its expiry and a
    # look at the consumer (5 + 1 s) before it made a new one and took the next event.
    async def scenario() -> tuple[float, dict[str, int]]:
        async with run_partition(settings, 1) as (owner, partition):
            reader = partition.reader
            assert reader is not None
            await owner.conn.js.delete_consumer(jetstream.STREAM, reader.consumer)
            seq = await publish(partition, "deleted", 1)
            published = time.monotonic()
            if not await until(lambda: partition.progress.last >= seq, 30):
                raise AssertionError(f"sequence {seq} not taken in 30 s: {partition.remade}")
            return time.monotonic() - published, dict(partition.remade)

    took, remade = asyncio.run(scenario())
    print(f"consumer deleted: the next event taken {took:.2f} s after it was stored")
    assert remade.get("pull ended by the server (409)") == 1, remade
    assert took < owner_module.PULL_WAIT / 2


@pytest.fixture
def quick_stall_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall check after 1 s idle and pulls of 1 s (10 s and 5 s in service), not to
    wait 15 s."""
    monkeypatch.setattr(owner_module, "STALL_AFTER", 1.0)
    monkeypatch.setattr(owner_module, "PULL_WAIT", 1.0)


@asynccontextmanager
async def impostor(owner: Owner, name: str) -> AsyncIterator[None]:
    """A consumer ``name`` that answers every pull at its expiry and never delivers (its
    subject holds nothing), as a consumer that lost its place would."""
    config = api.ConsumerConfig(
        durable_name=name,
        filter_subject="skns.exec.nowhere",
        ack_policy=api.AckPolicy.NONE,
        mem_storage=True,
        num_replicas=1,
    )
    await owner.conn.js.add_consumer(jetstream.STREAM, config)
    try:
        yield
    finally:
        await owner.conn.js.delete_consumer(jetstream.STREAM, name)


@pytest.mark.usefixtures("quick_stall_check")
def test_a_consumer_that_answers_and_delivers_nothing_is_made_again(
    settings: config.Settings,
) -> None:
    # A partition's reader turned to a consumer that delivers nothing: its lease is held,
    # /health is 200, and without a look at what the stream holds its events never ran.
    async def scenario() -> tuple[bool, dict[str, int]]:
        async with run_partition(settings, 2) as (owner, partition), impostor(owner, "stuck"):
            # Its real consumer left without a word (no 409 reaches the reader).
            stalled = Reader(owner.lean, jetstream.STREAM, "stuck", partition._take)
            stalled.open()
            real, partition.reader = partition.reader, stalled
            assert real is not None
            real.close()
            seq = await publish(partition, "stall", 5)
            ran = await until(lambda: partition.progress.last >= seq, 20)
            return ran, dict(partition.remade)

    ran, remade = asyncio.run(scenario())
    assert ran, f"the stalled partition's events were never taken: {remade}"
    assert any(why.startswith("stalled") for why in remade), remade


@pytest.mark.usefixtures("quick_stall_check")
def test_a_partition_whose_every_consumer_stalls_reads_its_events_from_the_leader(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a quorum loss nats-server 2.9 was seen placing one partition's new consumers,
    # again and again for over a minute, on a replica that answered none of their pulls
    # (CI: 12 acked events never ran). Made again, a consumer stalls again: what the
    # stream's leader holds is read from it meanwhile, so every acked event runs.
    async def stalling(self: Partition) -> Reader:  # every consumer made: one that stalls
        reader = Reader(self.owner.lean, jetstream.STREAM, "stuck4", self._take)
        reader.open()
        self.consumers += 1
        self.made_at = asyncio.get_running_loop().time()
        return reader

    async def scenario() -> tuple[bool, dict[str, Any]]:
        async with run_partition(settings, 4) as (owner, partition), impostor(owner, "stuck4"):
            monkeypatch.setattr(Partition, "_consumer", stalling)
            assert partition.reader is not None
            partition.reader.lose("replaced by one that stalls")
            seq = await publish(partition, "leader", 7)
            ran = await until(lambda: partition.progress.watermark >= seq, 20)
            return ran, partition.reader_status()

    ran, status = asyncio.run(scenario())
    assert ran, f"the events of a partition whose consumers all stall never ran: {status}"
    assert status["leader_reads"] == 7 and status["consumers"] >= 2, status
    assert any(why.startswith("stalled") for why in status["remade"]), status


def test_a_consumer_whose_node_does_not_answer_counts_as_gone_within_its_make_timeout(
    settings: config.Settings, nats_cluster: NatsCluster
) -> None:
    # After a pull heard nothing (its consumer's node died), the owner asks for the
    # consumer's info before making it again: never answered either, that took the whole
    # publish_timeout (5 s) on top; now as long as making a consumer may take (2 s).
    async def scenario() -> tuple[bool, float]:
        async with run_partition(settings, 3) as (owner, partition):
            reader = partition.reader
            assert reader is not None
            info = await owner.conn.js.consumer_info(jetstream.STREAM, reader.consumer)
            node = next(n for n in nats_cluster.nodes if n.name == info.cluster.leader)
            assert node.process is not None
            node.process.send_signal(signal.SIGSTOP)
            try:
                await until(lambda: stopped(node.process.pid), 5)
                started = time.monotonic()
                alive = await partition._consumer_alive(reader)
                return alive, time.monotonic() - started
            finally:
                node.process.send_signal(signal.SIGCONT)

    alive, took = asyncio.run(scenario())
    assert not alive
    assert took < owner_module.CONSUMER_TIMEOUT + 1.5  # publish_timeout is 5 s
