"""What the executor's cluster was made with, and every host held to it.

Two ``[cluster]`` keys are fixed when the cluster's stream and buckets are made:
``partitions`` (an account's subject is ``crc32(account) % partitions``: hosts that
disagree put one account in two partitions, run by two owners at once, and events on
subjects past a smaller count are never run) and ``lease_ttl`` (the lease and roster
buckets' expiry: a host renewing on another cadence lets its leases lapse between
renewals, or fences too late). The first router to set the cluster up records them
in the progress bucket (key :data:`KEY`, written with ``create``: one writer wins,
the others read its record), the lease TTL as the leases bucket has it. Every router
and shard compares its own configuration with the record before it runs anything,
and refuses to start on a difference (:class:`LayoutMismatch`), as a twin host name
is refused.

A cluster made by an skns with no record (its stream exists, the key does not): its
partition count is not stored anywhere, only bounded below by the highest partition
its subjects and commits show. A host whose ``partitions`` is not above that bound
is refused; otherwise its value is recorded, with a warning in the log.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from ..cluster.fixed import refusal, same
from ..cluster.settings import ClusterSettings
from ..errors import LayoutMismatch
from . import jetstream

log = logging.getLogger("skns.executor.cluster")

KEY = "layout"  # in the progress bucket, beside the partitions' p<n>
# A partition's subject in the stream, or its commit's in the progress bucket.
PARTITION = re.compile(r"(?:skns\.exec\.|\$KV\.skns_exec_progress\.p)(\d+)")


def compare(record: dict[str, Any], settings: ClusterSettings, path: Path) -> None:
    """Raise LayoutMismatch, naming the first key that differs."""
    if settings.partitions != record["partitions"]:
        why = "an account's events would go to two partitions, run by two owners at once"
        raise refusal("[cluster] partitions", settings.partitions, path, record["partitions"], why)
    if not same(settings.lease_ttl, record["lease_ttl"]):
        why = "leases renewed on another cadence than their buckets' expiry lapse"
        raise refusal("[cluster] lease_ttl", settings.lease_ttl, path, record["lease_ttl"], why)


async def highest_partition(js: Any) -> int:
    """The highest partition the stream's subjects or the commits show (-1: none)."""
    found = -1
    for stream, subjects in (
        (jetstream.STREAM, "skns.exec.*"),
        (f"KV_{jetstream.PROGRESS}", f"$KV.{jetstream.PROGRESS}.>"),
    ):
        info = await js.stream_info(stream, subjects_filter=subjects)
        for subject in info.state.subjects or {}:
            match = PARTITION.fullmatch(subject)
            if match:
                found = max(found, int(match.group(1)))
    return found


async def record_of(progress: Any) -> dict[str, Any] | None:
    """The cluster's record, None if there is none; raises LayoutMismatch if it is damaged."""
    try:
        entry = await progress.get(KEY)
    except KeyNotFoundError:
        return None
    value = entry.value or b""
    try:
        record = orjson.loads(value)
        ok = type(record["partitions"]) is int and isinstance(record["lease_ttl"], int | float)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise LayoutMismatch(
            f"the cluster's record of its layout (key {KEY!r} of {jetstream.PROGRESS}) is not "
            f"one: {value[:200]!r}; write it again as the hosts are configured (nats kv put "
            f'{jetstream.PROGRESS} {KEY} \'{{"partitions": 64, "lease_ttl": 3.0}}\'), or '
            "remake the executor's stream (skns-ctl remake-executor-stream)"
        )
    return record


async def agree(
    js: Any, buckets: jetstream.Buckets, settings: ClusterSettings, path: Path, create: bool
) -> dict[str, Any]:
    """The cluster's record, checked against this host's configuration (read from ``path``).

    With ``create`` (the router) a missing record is written first; without, NotFoundError
    until it is. Raises LayoutMismatch.
    """
    record = await record_of(buckets.progress)
    if record is None:
        if not create:
            raise NotFoundError
        highest = await highest_partition(js)
        if highest >= settings.partitions:
            raise LayoutMismatch(
                f"[cluster] partitions = {settings.partitions} in {path}, but the cluster's "
                f"stream, made by an skns that kept no record of its partitions, holds "
                f"partition {highest}: set partitions to the other hosts' value"
            )
        ttl = (await buckets.leases.status()).ttl
        made = {"partitions": settings.partitions, "lease_ttl": ttl}
        try:
            await buckets.progress.create(KEY, orjson.dumps(made))
            if highest >= 0:
                log.warning(
                    "the cluster had no record of its partitions (made by an older skns): "
                    "recorded partitions = %d from %s (its subjects and commits go up to "
                    "partition %d), lease_ttl = %g from its lease bucket",
                    settings.partitions, path, highest, ttl,
                )  # fmt: skip
        except KeyWrongLastSequenceError:  # another router recorded it first
            pass
        record = await record_of(buckets.progress)
        assert record is not None
    compare(record, settings, path)
    return record
