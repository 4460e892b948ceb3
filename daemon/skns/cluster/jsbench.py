"""The JetStream figures a capacity plan needs, measured on a throwaway cluster.

Part of ``skns-ctl bench cluster``: one Python client (this process) against the
3-node cluster of :mod:`skns.cluster.natscluster`, at ``replicas`` 3 and 1 in the
same run (two streams, two buckets), so each replicated figure stands beside the
unreplicated one:

- durable publishes to one stream over 64 subjects (the executor's partitions),
  pipelined: up to ``window`` publishes in flight, each one's ack read back
  (JetStream's ``{"stream":..,"seq":..}``, checked for an error); beside it the
  same publishes through nats-py's ``publish_async``, with a message id (the
  duplicate window), one at a time (the latency of one ack), and plain core NATS
  (nothing stored: the client's own ceiling);
- key-value updates with the expected revision (a lease renewal, a progress
  commit), one at a time and on 64 keys at once;
- an ordered consumer reading the whole stream, and one filtered to one subject.

CPU per message is read from /proc (psutil) for this client and for each node,
named by its role for that stream (the leader, which orders and stores every
message, and the followers). Everything shares this machine's cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import psutil
from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import Error as JetStreamError

from .natscluster import NatsCluster

SUBJECTS = 64  # the executor's default partition count
PAYLOAD = b'{"account":123456789,"payload":{"order":42,"amount":"1999.00","note":"bench"}}'


@dataclasses.dataclass
class Row:
    """One line of the bench table: a measure, its figure, the baseline of the same run."""

    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else ""


def ms(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1000:.2f} / p99 {p99 * 1000:.2f} ms"


@dataclasses.dataclass
class Cpu:
    """CPU microseconds per operation: this client, the group's leader, the node the
    client is connected to when it is not the leader (it routes every message and ack),
    and the other nodes (followers store a copy at R3)."""

    client: float
    leader: float
    entry: float | None
    others: list[float]

    def __str__(self) -> str:
        parts = [f"client {self.client:.1f}", f"leader {self.leader:.1f}"]
        if self.entry is not None:
            parts.append(f"client's node {self.entry:.1f}")
        parts.append("others " + " + ".join(f"{v:.1f}" for v in self.others))
        return ", ".join(parts) + " µs"


class _Meter:
    """CPU seconds of this process and of every node, around one piece of work."""

    def __init__(self, cluster: NatsCluster, nc: Any) -> None:
        self.me = psutil.Process()
        self.nodes = {
            n.name: psutil.Process(n.process.pid) for n in cluster.nodes if n.process is not None
        }
        port = nc.connected_url.port if nc.connected_url else None
        self.entry = next((n.name for n in cluster.nodes if n.port == port), "")

    def _now(self) -> dict[str, float]:
        out = {"": sum(self.me.cpu_times()[:2])}
        for name, proc in self.nodes.items():
            out[name] = sum(proc.cpu_times()[:2])
        return out

    async def measure(self, ops: int, leader: str, work: Awaitable[Any]) -> tuple[float, Cpu]:
        """Run ``work``: (seconds, CPU per op) with ``leader`` as the group's leader node."""
        before = self._now()
        started = time.perf_counter()
        await work
        elapsed = time.perf_counter() - started
        after = self._now()
        per = {k: (after[k] - before[k]) / ops * 1e6 for k in before}
        entry = per[self.entry] if self.entry != leader else None
        others = [v for k, v in per.items() if k not in ("", leader, self.entry)]
        return elapsed, Cpu(per[""], per.get(leader, 0.0), entry, others)


async def pipelined(
    nc: Any,
    subject: Callable[[int], str],
    count: int,
    window: int,
    msg_id: Callable[[int], str] | None = None,
    timeout: float = 120.0,
) -> int:
    """Publish ``count`` messages with at most ``window`` unacknowledged; the acks that
    carried an error. Each publish names its own reply subject under one inbox, so
    every ack is matched without a future per message."""
    inbox = nc.new_inbox()
    free = asyncio.Semaphore(window)
    acked = 0
    errors = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_ack(msg: Any) -> None:
        nonlocal acked, errors
        if b'"error"' in msg.data or not msg.data:
            errors += 1
        acked += 1
        free.release()
        if acked == count and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(f"{inbox}.*", cb=on_ack, pending_msgs_limit=-1)
    try:
        for i in range(count):
            await free.acquire()
            headers = {"Nats-Msg-Id": msg_id(i)} if msg_id else None
            await nc.publish(subject(i), PAYLOAD, reply=f"{inbox}.{i}", headers=headers)
        await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()
    return errors


async def _publish_async(js: Any, subject: Callable[[int], str], count: int) -> None:
    for i in range(count):
        await js.publish_async(subject(i), PAYLOAD)
    await js.publish_async_completed()


async def _core(nc: Any, count: int) -> None:
    for i in range(count):
        await nc.publish(f"skns.benchcore.{i % SUBJECTS}", PAYLOAD)
    await nc.flush()


async def _one_at_a_time(js: Any, subject: Callable[[int], str], count: int) -> list[float]:
    out = []
    for i in range(count):
        started = time.perf_counter()
        await js.publish(subject(i), PAYLOAD)
        out.append(time.perf_counter() - started)
    return out


async def _kv_serial(kv: Any, revisions: dict[str, int], count: int) -> list[float]:
    keys = list(revisions)
    out = []
    for i in range(count):
        key = keys[i % len(keys)]
        started = time.perf_counter()
        revisions[key] = await kv.update(key, b"host-a", last=revisions[key])
        out.append(time.perf_counter() - started)
    return out


async def _kv_gets(kv: Any, keys: list[str], count: int) -> None:
    for i in range(count):
        await kv.get(keys[i % len(keys)])


async def _kv_parallel(kv: Any, revisions: dict[str, int], rounds: int) -> None:
    async def renew(key: str) -> None:
        for _ in range(rounds):
            revisions[key] = await kv.update(key, b"host-a", last=revisions[key])

    await asyncio.gather(*(renew(key) for key in revisions))


async def _race(kv_a: Any, kv_b: Any, rounds: int, released: bool) -> int:
    """Two takers of one lease at once, through two nodes: a ``create`` of the same key by
    each (of a key written and deleted, as a lease released at a handover leaves it, or of a
    new key); how many of ``rounds`` both won. Either, never both, is a compare-and-set."""

    async def take(kv: Any, key: str) -> bool:
        try:
            await kv.create(key, b"taker")
        except (JetStreamError, NatsError, TimeoutError):
            return False
        return True

    both = 0
    for i in range(rounds):
        key = f"{'released' if released else 'new'}{i}"
        if released:
            await kv_a.delete(key, last=await kv_a.put(key, b"holder"))
        both += all(await asyncio.gather(take(kv_a, key), take(kv_b, key)))
    return both


async def _infos(js: Any, bucket: str, count: int) -> None:
    """What a roster read is: the bucket's stream info, listing its live keys."""
    for _ in range(count):
        await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")


async def _purges(js: Any, stream: str, prefix: str, first: int, last: int, rounds: int) -> None:
    """What a trim is: each subject purged below a cut that moves up ``rounds`` times
    (through every message of the stream), the 64 subjects at once."""
    for r in range(1, rounds + 1):
        cut = first + (last - first) * r // rounds
        await asyncio.gather(
            *(js.purge_stream(stream, subject=f"{prefix}.{k}", seq=cut) for k in range(SUBJECTS))
        )


async def _read(js: Any, subject: str, expected: int, timeout: float = 120.0) -> None:
    """Read ``expected`` messages of ``subject`` through an ordered consumer."""
    got = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Any) -> None:
        nonlocal got
        got += 1
        if got == expected and not done.done():
            done.set_result(None)

    sub = await js.subscribe(subject, ordered_consumer=True, cb=on_msg, pending_msgs_limit=-1)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()


@dataclasses.dataclass
class _Figures:
    """One replication factor's measurements."""

    pipelined: float = 0.0
    pipelined_cpu: Cpu | None = None
    msg_id: float = 0.0
    publish_async: float = 0.0
    publish_async_cpu: Cpu | None = None
    latencies: list[float] = dataclasses.field(default_factory=list)
    kv_serial: list[float] = dataclasses.field(default_factory=list)
    kv_parallel: float = 0.0
    kv_cpu: Cpu | None = None
    kv_get: float = 0.0
    kv_get_cpu: Cpu | None = None
    read_all: float = 0.0
    read_all_cpu: Cpu | None = None
    read_one: float = 0.0
    info: float = 0.0
    info_cpu: Cpu | None = None
    purge: float = 0.0
    purge_cpu: Cpu | None = None
    races: int = 0
    both_released: int = 0
    both_new: int = 0
    errors: int = 0


async def _leader(js: Any, stream: str) -> str:
    info = await js.stream_info(stream)
    return (info.cluster.leader if info.cluster else None) or ""


async def _measure(
    nc: Any, other: Any, meter: _Meter, replicas: int, count: int, window: int, kv_rounds: int
) -> _Figures:
    js = nc.jetstream(timeout=30)
    f = _Figures()
    stream = f"SKNS_BENCH_R{replicas}"
    prefix = f"skns.bench.r{replicas}"
    await js.add_stream(
        api.StreamConfig(name=stream, subjects=[f"{prefix}.*"], num_replicas=replicas)
    )
    leader = await _leader(js, stream)
    progress(f"  replicas {replicas}: stream {stream} on 3 nodes, leader {leader}")

    def subject(i: int) -> str:
        return f"{prefix}.{i % SUBJECTS}"

    await pipelined(nc, subject, min(count, 2000), window)  # warm up: connections, the store
    errors = [0]

    async def run_pipelined(msg_id: Callable[[int], str] | None = None) -> None:
        errors[0] += await pipelined(nc, subject, count, window, msg_id)

    elapsed, f.pipelined_cpu = await meter.measure(count, leader, run_pipelined())
    f.pipelined = count / elapsed
    progress(f"    pipelined publish: {f.pipelined:,.0f} msg/s ({f.pipelined_cpu})")
    run = time.monotonic_ns()  # message ids unique to this run
    elapsed, _ = await meter.measure(count, leader, run_pipelined(lambda i: f"{run}-{i}"))
    f.msg_id = count / elapsed
    progress(f"    the same with a message id: {f.msg_id:,.0f} msg/s")
    elapsed, f.publish_async_cpu = await meter.measure(
        count, leader, _publish_async(nc.jetstream(timeout=30), subject, count)
    )
    f.publish_async = count / elapsed
    progress(f"    nats-py publish_async: {f.publish_async:,.0f} msg/s ({f.publish_async_cpu})")
    f.latencies = await _one_at_a_time(js, subject, max(100, count // 20))
    progress(f"    one publish at a time: {ms(f.latencies)}")

    bucket = f"skns_bench_r{replicas}"
    kv = await js.create_key_value(
        api.KeyValueConfig(bucket=bucket, history=1, ttl=30, replicas=replicas)
    )
    kv_leader = await _leader(js, f"KV_{bucket}")
    revisions = {f"p{k}": await kv.put(f"p{k}", b"host-a") for k in range(SUBJECTS)}
    f.kv_serial = await _kv_serial(kv, revisions, max(100, kv_rounds * 4))
    progress(f"    key-value update, one at a time: {ms(f.kv_serial)}")
    ops = kv_rounds * len(revisions)
    elapsed, f.kv_cpu = await meter.measure(ops, kv_leader, _kv_parallel(kv, revisions, kv_rounds))
    f.kv_parallel = ops / elapsed
    progress(f"    key-value update, 64 keys at once: {f.kv_parallel:,.0f}/s ({f.kv_cpu})")

    kv_b = await other.jetstream(timeout=30).key_value(bucket)
    f.races = kv_rounds * 2
    f.both_released = await _race(kv, kv_b, f.races, released=True)
    f.both_new = await _race(kv, kv_b, f.races, released=False)
    progress(
        f"    two takers of one lease at once, both won: {f.both_released} of {f.races} "
        f"of a released key, {f.both_new} of {f.races} of a new one"
    )
    ops = kv_rounds * 16  # CPU times tick every 10 ms: enough requests to resolve them
    elapsed, f.kv_get_cpu = await meter.measure(ops, kv_leader, _kv_gets(kv, list(revisions), ops))
    f.kv_get = ops / elapsed
    progress(f"    key-value get, one at a time: {f.kv_get:,.0f}/s ({f.kv_get_cpu})")

    total = (await js.stream_info(stream)).state.messages
    elapsed, f.read_all_cpu = await meter.measure(total, leader, _read(js, f"{prefix}.*", total))
    f.read_all = total / elapsed
    progress(f"    ordered consumer, whole stream: {f.read_all:,.0f} msg/s ({f.read_all_cpu})")
    one = f"{prefix}.7"
    info = await js.stream_info(stream, subjects_filter=one)
    mine = (info.state.subjects or {}).get(one, 0)
    started = time.perf_counter()
    await _read(js, one, mine)
    f.read_one = mine / (time.perf_counter() - started)
    progress(f"    ordered consumer, 1 subject of 64: {f.read_one:,.0f} msg/s of its own")
    ops = kv_rounds * 8
    elapsed, f.info_cpu = await meter.measure(ops, kv_leader, _infos(js, bucket, ops))
    f.info = ops / elapsed
    progress(f"    stream info of the bucket, its keys listed: {f.info:,.0f}/s ({f.info_cpu})")
    first, last = (await js.stream_info(stream)).state.first_seq, total
    elapsed, f.purge_cpu = await meter.measure(
        SUBJECTS * kv_rounds, leader, _purges(js, stream, prefix, first, last, kv_rounds)
    )
    f.purge = SUBJECTS * kv_rounds / elapsed
    progress(f"    purge of a subject below a sequence: {f.purge:,.0f}/s ({f.purge_cpu})")
    f.errors = errors[0]
    return f


async def _run(
    cluster: NatsCluster, count: int, window: int, kv_rounds: int
) -> tuple[dict[int, _Figures], float]:
    nc = await nats.connect(servers=cluster.urls, name="skns bench")
    # A second client, on another node: the other taker of a lease.
    port = nc.connected_url.port if nc.connected_url else None
    elsewhere = [node.url for node in cluster.nodes if node.port != port]
    other = await nats.connect(servers=elsewhere, name="skns bench, other taker")
    try:
        meter = _Meter(cluster, nc)
        elapsed, _ = await meter.measure(count, "-", _core(nc, count))
        core = count / elapsed
        progress(f"  core NATS publish, nothing stored: {core:,.0f} msg/s")
        # R1 first: the followers of R3 apply its last purges for a while after they are
        # acknowledged, and would weigh on whatever came next.
        figures = {r: await _measure(nc, other, meter, r, count, window, kv_rounds) for r in (1, 3)}
    finally:
        await other.close()
        await nc.close()
    return figures, core


def rows(cluster: NatsCluster, count: int, window: int, kv_rounds: int) -> list[Row]:
    """Measure, with progress lines on stderr; the table's rows."""
    progress(
        f"jetstream: one Python client, {count:,} messages of {len(PAYLOAD)} bytes over "
        f"{SUBJECTS} subjects, {window:,} in flight; replicas 1, then 3"
    )
    figures, core = asyncio.run(_run(cluster, count, window, kv_rounds))
    r3, r1 = figures[3], figures[1]
    out = [
        Row(
            f"JetStream publish, R3, pipelined ({window:,} in flight), {SUBJECTS} subjects",
            f"{r3.pipelined:,.0f} msg/s",
            f"R1: {r1.pipelined:,.0f} msg/s",
            ratio(r3.pipelined, r1.pipelined),
        ),
        Row("  CPU per publish, R3", str(r3.pipelined_cpu), f"R1: {r1.pipelined_cpu}"),
        Row(
            "JetStream publish, R1, pipelined",
            f"{r1.pipelined:,.0f} msg/s",
            f"core NATS, nothing stored: {core:,.0f} msg/s",
            ratio(r1.pipelined, core),
        ),
        Row(
            "  the same with a message id (dedup), R3 / R1",
            f"{r3.msg_id:,.0f} / {r1.msg_id:,.0f} msg/s",
            f"without: {r3.pipelined:,.0f} / {r1.pipelined:,.0f}",
            ratio(r3.msg_id, r3.pipelined),
        ),
        Row(
            "  through nats-py publish_async, R3",
            f"{r3.publish_async:,.0f} msg/s ({r3.publish_async_cpu})",
            f"own pipeline: {r3.pipelined:,.0f} msg/s",
            ratio(r3.publish_async, r3.pipelined),
        ),
        Row(
            "JetStream publish, one at a time, R3 (ack latency)",
            ms(r3.latencies),
            f"R1: {ms(r1.latencies)}",
            ratio(statistics.median(r3.latencies), statistics.median(r1.latencies)),
        ),
        Row(
            "key-value update with revision (lease renewal, commit), 64 keys at once, R3",
            f"{r3.kv_parallel:,.0f}/s",
            f"R1: {r1.kv_parallel:,.0f}/s",
            ratio(r3.kv_parallel, r1.kv_parallel),
        ),
        Row("  CPU per key-value update, R3", str(r3.kv_cpu), f"R1: {r1.kv_cpu}"),
        Row(
            "key-value update, one at a time, R3",
            ms(r3.kv_serial),
            f"R1: {ms(r1.kv_serial)}",
            ratio(statistics.median(r3.kv_serial), statistics.median(r1.kv_serial)),
        ),
        Row(
            "key-value get (a lease's holder, a host's key), one at a time, R3",
            f"{r3.kv_get:,.0f}/s ({r3.kv_get_cpu})",
            f"R1: {r1.kv_get:,.0f}/s",
            ratio(r3.kv_get, r1.kv_get),
        ),
        Row(
            "ordered consumer, whole stream, R3",
            f"{r3.read_all:,.0f} msg/s ({r3.read_all_cpu})",
            f"R1: {r1.read_all:,.0f} msg/s",
            ratio(r3.read_all, r1.read_all),
        ),
        Row(
            "ordered consumer, 1 subject of 64, R3 (its own messages)",
            f"{r3.read_one:,.0f} msg/s",
            f"whole stream: {r3.read_all:,.0f} msg/s",
            ratio(r3.read_one, r3.read_all),
        ),
        Row(
            "stream info listing a bucket's keys (a roster read), one at a time, R3",
            f"{r3.info:,.0f}/s ({r3.info_cpu})",
            f"R1: {r1.info:,.0f}/s",
            ratio(r3.info, r1.info),
        ),
        Row(
            "purge of one subject below a sequence (a trim), 64 at once, R3",
            f"{r3.purge:,.0f}/s ({r3.purge_cpu})",
            f"R1: {r1.purge:,.0f}/s",
            ratio(r3.purge, r1.purge),
        ),
    ]
    out.append(
        Row(
            "two takers of one lease at once (create of one key via two nodes), both won, R3",
            f"{r3.both_released} of {r3.races} of a released key (a delete marker), "
            f"{r3.both_new} of {r3.races} of a new one",
            f"R1: {r1.both_released} and {r1.both_new} of {r1.races}",
            "never both: " + ("held" if r3.both_released + r3.both_new == 0 else "NOT held"),
        )
    )
    if r3.errors or r1.errors:
        out.append(Row("publishes answered with an error", f"R3 {r3.errors}, R1 {r1.errors}"))
    return out
