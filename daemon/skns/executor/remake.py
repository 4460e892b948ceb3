"""``skns-ctl remake-executor-stream``: remove the executor's stream and buckets from the
cluster, so that the next router makes them anew with its ``partitions`` and ``lease_ttl``.

Refused (:class:`~skns.errors.ClusterBusy`) while a host is in the roster (its executor
runs: it would make them again at once, on its own configuration) or while a partition
holds events its commit has not passed (they would be lost), unless forced.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.js.errors import NotFoundError

from ..cluster.connection import Connection
from ..cluster.settings import ClusterSettings
from ..errors import ClusterBusy, ProtocolError
from . import jetstream
from .layout import PARTITION
from .progress import Progress

STREAMS = (jetstream.STREAM, *(f"KV_{b}" for b in (jetstream.HOSTS, jetstream.LEASES,
           jetstream.PROGRESS)))  # fmt: skip
CONNECT_TIMEOUT = 10.0


async def not_run(js: Any) -> dict[int, int]:
    """Partition -> the last sequence on its subject, for those whose commit is below it."""
    info = await js.stream_info(jetstream.STREAM, subjects_filter="skns.exec.*")
    progress = await js.key_value(jetstream.PROGRESS)
    left: dict[int, int] = {}
    for subject in info.state.subjects or {}:
        match = PARTITION.fullmatch(subject)
        if match is None:
            continue
        partition = int(match.group(1))
        last = (await js.get_last_msg(jetstream.STREAM, subject)).seq
        try:
            commit = Progress.decode((await progress.get(jetstream.key(partition))).value or b"")
        except (NotFoundError, ProtocolError):  # never committed, or unreadable
            commit = Progress()
        if commit.watermark < last:
            left[partition] = last
    return left


async def roster(js: Any) -> list[str]:
    """The hosts in the roster (their executor runs, or died less than lease_ttl ago)."""
    bucket = jetstream.HOSTS
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")
    return sorted(name.removeprefix(f"$KV.{bucket}.") for name in info.state.subjects or {})


async def remake(settings: ClusterSettings, force: bool) -> list[str]:
    """Remove the executor's streams (those present); their names. Raises ClusterBusy,
    TimeoutError when the cluster cannot be reached."""
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(CONNECT_TIMEOUT, stop.set)
    conn = Connection(settings, "skns-ctl")
    if not await conn.open(stop):
        raise TimeoutError(f"no NATS server of {list(settings.nats)} answered")
    try:
        js = conn.admin
        with contextlib.suppress(NotFoundError):
            hosts = await roster(js)
            if hosts and not force:
                raise ClusterBusy(
                    f"the executor still runs on {', '.join(hosts)}: stop it on every host first"
                )
        with contextlib.suppress(NotFoundError):
            left = await not_run(js)
            if left and not force:
                raise ClusterBusy(
                    f"partitions {sorted(left)} hold events not run yet (the last at sequence "
                    f"{max(left.values())}): run the hosts with their old configuration until "
                    "skns-ctl status shows lag_total 0, or pass --force to lose them"
                )
        removed = []
        for stream in STREAMS:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
                removed.append(stream)
        return removed
    finally:
        await conn.close()
