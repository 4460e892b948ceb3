"""The executor's JetStream objects in cluster mode, and the roster of live hosts.

* Stream ``SKNS_EXEC``: subjects ``skns.exec.<partition>``, limits retention
  (each partition's owner purges its subject below the committed watermark),
  a duplicate window of :data:`DUPLICATE_WINDOW` seconds for client event ids.
* Bucket ``skns_exec_hosts``: one key per live host (its name), the value its
  instance id; written every ``lease_ttl / 6`` s by the host's router, expiring
  ``lease_ttl`` s after its last write, so a dead host drops out on its own.
* Bucket ``skns_exec_leases``: key ``p<partition>``, the lease of its owner
  (:class:`skns.cluster.lease.Lease`; value ``<host>/<shard>/<pid>``).
* Bucket ``skns_exec_progress``: key ``p<partition>``, the committed
  :class:`~skns.executor.progress.Progress` (no expiry).

The instance id tells two hosts with one ``name`` apart: it is made once per
state directory and kept there, so a host restarted (or its router restarted)
is the same instance, and a second machine given the same name is not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import orjson
from nats.errors import NoRespondersError
from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from ..cluster.connection import Connection
from ..cluster.lean import Lean
from ..cluster.leankv import api_answer
from ..cluster.lease import lease_bucket, purge_key
from ..cluster.settings import ClusterSettings
from ..errors import SknsError

log = logging.getLogger("skns.executor.cluster")

STREAM = "SKNS_EXEC"
HOSTS = "skns_exec_hosts"
LEASES = "skns_exec_leases"
PROGRESS = "skns_exec_progress"
DUPLICATE_WINDOW = 120.0  # seconds a client's event id is remembered by JetStream
INSTANCE_FILE = "instance"
LEAVE_TIMEOUT = 1.0  # seconds a stopping router waits to drop its key (else it expires)


class DuplicateHost(SknsError):
    """Another live host has this host's ``name``."""


def subject(partition: int) -> str:
    return f"skns.exec.{partition}"


def key(partition: int) -> str:
    return f"p{partition}"


def instance_id(directory: Path) -> str:
    """This host's instance id, made on first use and kept in ``directory``.

    Router and shards start at once: the first to link its file in place wins,
    the others read it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / INSTANCE_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    made = uuid.uuid4().hex
    tmp = directory / f".{INSTANCE_FILE}.{made}"
    tmp.write_text(made + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


class Buckets:
    """The stream and the three buckets, made (or bound) on one connection."""

    def __init__(self, quick: Any, hosts: Any, leases: Any, progress: Any) -> None:
        self.quick = quick  # the JetStream context they were bound through
        self.hosts = hosts
        self.leases = leases
        self.progress = progress


async def set_up(conn: Connection, settings: ClusterSettings, create: bool) -> Buckets:
    """Bind the stream and buckets; with ``create`` (the router), make those missing first.

    Only what is missing is made: many processes asking the meta leader to make or
    update one stream at once were seen to leave some without an answer for 10 s.
    Raises NotFoundError without ``create`` while the router has not made them yet.
    """
    replicas = settings.replicas
    js = conn.admin
    if create:
        try:
            await js.stream_info(STREAM)
        except NotFoundError:
            await conn.stream(
                api.StreamConfig(
                    name=STREAM,
                    subjects=["skns.exec.*"],
                    retention=api.RetentionPolicy.LIMITS,
                    storage=api.StorageType.FILE,
                    num_replicas=replicas,
                    duplicate_window=DUPLICATE_WINDOW,
                )
            )
        for bucket in (HOSTS, LEASES):
            await lease_bucket(js, bucket, settings.lease_ttl, replicas)
        try:
            await js.key_value(PROGRESS)
        except NotFoundError:
            await js.create_key_value(
                api.KeyValueConfig(bucket=PROGRESS, history=1, replicas=replicas)
            )
    else:
        await js.stream_info(STREAM)
    # Lease, roster and commit requests must answer well inside a lease's life (a commit
    # landing late could overwrite a successor's).
    quick = conn.jetstream(settings.lease_ttl / 2)
    return Buckets(quick, *[await quick.key_value(name) for name in (HOSTS, LEASES, PROGRESS)])


async def live_hosts(lean: Lean, timeout: float) -> list[str]:
    """The names of the hosts whose heartbeat has not expired, sorted.

    A stream-info request on the lean connection read with orjson, not nats-py's
    ``stream_info`` (every field into dataclasses, its times into datetimes): every shard
    and router asks twice a second (two thirds of a shard's roster reads under py-spy).
    Raises NotConnected, TimeoutError, or nats-py's errors for an error answer.
    """
    request = orjson.dumps({"subjects_filter": f"$KV.{HOSTS}.>"})
    status, data = await lean.request(f"$JS.API.STREAM.INFO.KV_{HOSTS}", request, b"", timeout)
    state = api_answer(status, data).get("state")
    subjects = state.get("subjects") if isinstance(state, dict) else None
    prefix = len(f"$KV.{HOSTS}.")
    return sorted(name[prefix:] for name in (subjects or {}))


class Heartbeat:
    """This host's key in the roster, kept alive by its router."""

    def __init__(self, kv: Any, conn: Connection, name: str, instance: str) -> None:
        self.kv = kv
        self.conn = conn
        self.name = name
        self.instance = instance.encode()
        self.revision: int | None = None
        self.failures = 0

    async def join(self) -> None:
        """Write the key; raises DuplicateHost if another instance holds the name."""
        try:
            self.revision = await self.kv.create(self.name, self.instance)
            return
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.kv.get(self.name)
        except KeyNotFoundError:  # expired meanwhile
            self.revision = await self.kv.create(self.name, self.instance)
            return
        if entry.value != self.instance:
            raise DuplicateHost(
                f"another host named {self.name!r} is live in the cluster (instance "
                f"{entry.value.decode(errors='replace')}, this one {self.instance.decode()}): "
                "give each host its own [cluster] name"
            )
        # This instance's own key, from before a restart of the router or the host.
        self.revision = await self.kv.update(self.name, self.instance, last=entry.revision)

    async def beat(self) -> None:
        """Renew the key (again after it expired, unless another instance took the name)."""
        try:
            if self.revision is None:
                await self.join()
            else:
                self.revision = await self.kv.update(self.name, self.instance, last=self.revision)
        except KeyWrongLastSequenceError:
            self.revision = None  # expired, or taken: join() again tells which
            self.failures += 1
        except DuplicateHost as exc:
            self.failures += 1
            log.error("%s", exc)
        except Exception as exc:  # nats-py raises several kinds; the next beat retries
            self.failures += 1
            log.warning("cannot renew this host's heartbeat: %s", exc)

    async def leave(self) -> None:
        """Drop the key at once (a graceful stop): the others take our partitions now."""
        if self.revision is None:
            return
        self.revision = None
        try:
            await asyncio.wait_for(purge_key(self.conn.js, HOSTS, self.name), LEAVE_TIMEOUT)
        except Exception as exc:
            log.debug("leaving the roster: %s", exc)


async def kv_get(lean: Lean, bucket: str, name: str, timeout: float) -> bytes | None:
    """The live value of key ``name`` of ``bucket``, or None (never written, expired,
    deleted or purged).

    A plain message-get request on the lean connection read with orjson: nats-py's
    ``KeyValue.get`` parses the headers with the email package and the time into a
    datetime, and the router asks for the holders of its whole share every ``lease_ttl /
    3`` s, each shard for its host's roster entry twice a second. Raises NotConnected,
    TimeoutError, or nats-py's errors for an error answer.
    """
    request = orjson.dumps({"last_by_subj": f"$KV.{bucket}.{name}"})
    status, data = await lean.request(f"$JS.API.STREAM.MSG.GET.KV_{bucket}", request, b"", timeout)
    if status == "503":
        raise NoRespondersError
    return kv_value(data)


async def owner_of(lean: Lean, partition: int, timeout: float) -> str | None:
    """Who holds a partition's lease (``host/shard/pid``), or None."""
    value = await kv_get(lean, LEASES, key(partition), timeout)
    return value.decode(errors="replace") if value else None


def kv_value(answer: bytes) -> bytes | None:
    """The value in a message-get answer for a key; None when it has no live value (no
    message: never written, expired; a delete or purge marker). Raises APIError for an
    error answer or one that is not a message-get answer."""
    try:
        doc = orjson.loads(answer)
        error = doc.get("error")
        if error is not None:
            if error.get("code") == 404:
                return None
            raise APIError(code=error.get("code"), description=error.get("description"))
        message = doc["message"]
        if b"KV-Operation" in base64.b64decode(message.get("hdrs") or ""):
            return None
        return base64.b64decode(message.get("data") or "")
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise APIError(description=f"not a message-get answer: {answer[:200]!r}") from exc


def holder_host(holder: str | None) -> str | None:
    return holder.split("/", 1)[0] if holder else None
