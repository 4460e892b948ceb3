"""The record of what the executor's cluster was made with (partitions, lease_ttl), on a
real 3-node cluster: written once, compared by every router and shard, and a cluster made
by an skns that kept none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from skns import config
from skns.cluster.connection import Connection
from skns.cluster.lease import purge_key
from skns.cluster.natscluster import NatsCluster
from skns.errors import ClusterBusy, LayoutMismatch
from skns.executor import jetstream, layout
from skns.executor.clusterhosts import LEASE_TTL, PARTITIONS, tables
from skns.executor.progress import Progress
from skns.executor.remake import STREAMS, remake
from skns.localservice import toml_dumps
from skns.ports import free_port


def settings_of(nats_cluster: NatsCluster, tmp_path: Path, **cluster: Any) -> config.Settings:
    """A host's settings, written to its config file too (for skns-ctl)."""
    doc = tables(tmp_path, nats_cluster, "solo", free_port(), {"replicas": 1, **cluster}, {}, {})
    path = tmp_path / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_dumps(doc))
    return config.parse(doc, path)


@contextlib.asynccontextmanager
async def connected(settings: config.Settings) -> AsyncIterator[Connection]:
    conn = Connection(settings.cluster, "test")
    if not await conn.open(asyncio.Event()):
        raise RuntimeError("not connected")
    try:
        yield conn
    finally:
        await conn.close()


async def agree(settings: config.Settings, create: bool) -> dict[str, Any]:
    async with connected(settings) as conn:
        buckets = await jetstream.set_up(conn, settings.cluster, create=create)
        return await layout.agree(conn.admin, buckets, settings.cluster, settings.path, create)


@pytest.fixture
def made(nats_cluster: NatsCluster, tmp_path: Path) -> config.Settings:
    """A cluster with no executor stream or buckets; the settings of a host that makes them."""

    async def remove() -> None:
        nc = await nats.connect(nats_cluster.urls[0])
        try:
            js = nc.jetstream()
            for stream in (jetstream.STREAM, *(f"KV_{b}" for b in (jetstream.HOSTS,
                           jetstream.LEASES, jetstream.PROGRESS))):  # fmt: skip
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(remove())
    return settings_of(nats_cluster, tmp_path)


def test_the_first_router_records_the_layout_and_every_host_is_held_to_it(
    made: config.Settings, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    record = {"partitions": PARTITIONS, "lease_ttl": LEASE_TTL}
    assert asyncio.run(agree(made, create=True)) == record
    assert asyncio.run(agree(made, create=False)) == record  # a shard of the same config
    other = settings_of(nats_cluster, tmp_path / "other", partitions=8)
    with pytest.raises(LayoutMismatch) as refused:
        asyncio.run(agree(other, create=True))
    assert str(refused.value).startswith(
        f"[cluster] partitions = 8 in {other.path}, but the cluster was made with partitions = 16:"
        " every host must have the same (an account's events would go to two partitions"
    )
    with pytest.raises(LayoutMismatch, match=r"lease_ttl = 4.5 in .*made with lease_ttl = 3:"):
        asyncio.run(agree(settings_of(nats_cluster, tmp_path / "ttl", lease_ttl=4.5), False))


@pytest.mark.parametrize("junk", [b"not json", b"[16, 3]", b'{"partitions": "16", "lease_ttl": 3}'])
def test_a_damaged_record_is_refused_by_name(made: config.Settings, junk: bytes) -> None:
    async def damaged() -> None:
        async with connected(made) as conn:
            buckets = await jetstream.set_up(conn, made.cluster, create=True)
            await buckets.progress.put(layout.KEY, junk)

    asyncio.run(damaged())
    with pytest.raises(LayoutMismatch) as refused:
        asyncio.run(agree(made, create=True))
    assert str(refused.value).startswith(
        f"the cluster's record of its layout (key 'layout' of skns_exec_progress) is not one: "
        f"{junk!r}; write it again as the hosts are configured (nats kv put skns_exec_progress"
        ' layout \'{"partitions": 64, "lease_ttl": 3.0}\'), or remake'
    )


def test_a_shard_waits_for_its_router_to_record_the_layout(made: config.Settings) -> None:
    async def shard_first() -> None:
        async with connected(made) as conn:
            buckets = await jetstream.set_up(conn, made.cluster, create=True)  # no record yet
            await layout.agree(conn.admin, buckets, made.cluster, made.path, create=False)

    with pytest.raises(NotFoundError):  # the owner tries again shortly
        asyncio.run(shard_first())


def test_two_routers_at_once_on_a_new_cluster_one_layout_wins(
    made: config.Settings, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    other = settings_of(nats_cluster, tmp_path / "other", partitions=8)

    async def both() -> list[Any]:
        return await asyncio.gather(agree(made, True), agree(other, True), return_exceptions=True)

    outcomes = asyncio.run(both())
    refused = [o for o in outcomes if isinstance(o, LayoutMismatch)]
    assert len(refused) == 1, outcomes
    assert next(o for o in outcomes if isinstance(o, dict))["partitions"] in (8, 16)


def test_a_cluster_made_without_a_record_is_adopted_or_refused_by_its_subjects(
    made: config.Settings,
    nats_cluster: NatsCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def as_an_older_skns_left_it() -> None:
        async with connected(made) as conn:
            await agree(made, create=True)
            await purge_key(conn.js, jetstream.PROGRESS, layout.KEY)  # no record
            await conn.js.publish(jetstream.subject(12), b"[1, null, 1]")
            assert (
                await layout.record_of(
                    (await jetstream.set_up(conn, made.cluster, create=False)).progress
                )
                is None
            )

    asyncio.run(as_an_older_skns_left_it())
    fewer = settings_of(nats_cluster, tmp_path / "fewer", partitions=12)
    with pytest.raises(LayoutMismatch) as refused:
        asyncio.run(agree(fewer, create=True))
    assert str(refused.value) == (
        f"[cluster] partitions = 12 in {fewer.path}, but the cluster's stream, made by an skns "
        "that kept no record of its partitions, holds partition 12: set partitions to the "
        "other hosts' value"
    )
    with caplog.at_level(logging.WARNING, "skns.executor.cluster"):
        assert asyncio.run(agree(made, create=True)) == {"partitions": 16, "lease_ttl": 3.0}
    assert (
        f"recorded partitions = 16 from {made.path} (its subjects and commits go up to "
        "partition 12), lease_ttl = 3 from its lease bucket" in caplog.text
    )
    with pytest.raises(LayoutMismatch):  # recorded now: held to it
        asyncio.run(agree(settings_of(nats_cluster, tmp_path / "more", partitions=32), True))


def ctl_remake(settings: config.Settings, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["-m", "skns.ctl", "--config", str(settings.path), "remake-executor-stream", *args]
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=60)


def test_the_stream_is_remade_only_once_every_executor_stopped_and_every_event_ran(
    made: config.Settings, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # skns-ctl remake-executor-stream: the procedure's step that removes the stream and buckets.
    async def stored_and_on_the_roster() -> int:
        async with connected(made) as conn:
            buckets = await jetstream.set_up(conn, made.cluster, create=True)
            await layout.agree(conn.admin, buckets, made.cluster, made.path, create=True)
            await buckets.hosts.put("a", b"instance")
            return (await conn.js.publish(jetstream.subject(3), b"[1, null, 1]")).seq

    seq = asyncio.run(stored_and_on_the_roster())
    refused = ctl_remake(made)
    assert refused.returncode == 1
    assert refused.stderr == (
        "skns-ctl: nothing removed: the executor still runs on a: stop it on every host first\n"
    )

    async def left(commit: Progress | None) -> None:
        async with connected(made) as conn:
            buckets = await jetstream.set_up(conn, made.cluster, create=False)
            await purge_key(conn.js, jetstream.HOSTS, "a")  # a stopped
            if commit is not None:
                await buckets.progress.put(jetstream.key(3), commit.encode())

    asyncio.run(left(None))
    busy = rf"^partitions \[3\] hold events not run yet \(the last at sequence {seq}\)"
    with pytest.raises(ClusterBusy, match=busy):
        asyncio.run(remake(made.cluster, force=False))
    asyncio.run(left(Progress(seq)))  # it ran
    removed = ctl_remake(made)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(
        "removed SKNS_EXEC, KV_skns_exec_hosts, KV_skns_exec_leases, KV_skns_exec_progress:"
    )
    # The next router makes them with its own partitions.
    fewer = settings_of(nats_cluster, tmp_path / "fewer", partitions=8)
    assert asyncio.run(agree(fewer, create=True))["partitions"] == 8


def test_forced_the_stream_is_removed_with_the_events_not_run(made: config.Settings) -> None:
    async def stored() -> None:
        async with connected(made) as conn:
            buckets = await jetstream.set_up(conn, made.cluster, create=True)
            await layout.agree(conn.admin, buckets, made.cluster, made.path, create=True)
            await conn.js.publish(jetstream.subject(5), b"[1, null, 1]")

    asyncio.run(stored())
    assert asyncio.run(remake(made.cluster, force=True)) == list(STREAMS)
    assert asyncio.run(remake(made.cluster, force=False)) == []  # none left
