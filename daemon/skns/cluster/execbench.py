"""The executor in cluster mode beside the single host: part of ``skns-ctl bench cluster``.

Whole hosts (:class:`~skns.executor.clusterhosts.Host`: a ``python -m skns`` with
only the executor, 2 shards, in a directory of its own) on the bench's 3-node
JetStream cluster, and one host without ``[cluster]`` as the single-host baseline.
Two "hosts" here share this machine's cores with the NATS nodes and the client.

1. CPU per event, zero-cost handler (``skns.executor.handlers:noop``): ``events``
   events over 1,000 accounts, 100 a frame (the next sent on the previous one's ack),
   all sent to the single host, then half to each of hosts a and b at once. CPU from
   /proc of each host's processes (router, shards, and the supervisor apart), from the
   first frame sent until the shards' ``done`` counts reach the total; beside it,
   what the same processes use idle, and what the NATS nodes used per event.
2. The statement's workload: 10,000 events over 1,000 accounts, 1 s handler
   (``record``), half sent to each host at once, from the first send to the last run,
   against the lower bound (the busiest account's event count x 1 s); checked from the
   records: every acked event ran once, each account's in order.
3. Failover: a feeder sends one event to every partition each 100 ms to the host that
   stays while the other is killed -9 (supervisor and children); the time from the kill
   until an event of each of the dead host's partitions has run on the survivor (and,
   from its status, until it owned them all). The dead host is started again and the
   partitions balance before the next kill; ``kills`` times, alternating hosts. The
   balance is the most minus the fewest partitions a host owns once settled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from ..executor.checker import Verdict
from ..executor.clusterhosts import (
    Feeder,
    Host,
    all_records,
    balanced,
    check,
    running,
    send_at_once,
    statement_workload,
    wait_all_ran,
)
from ..executor.placement import partition_of
from ..localservice import wait_for
from .jsbench import Row, progress
from .natscluster import NatsCluster

ACCOUNTS = 1_000
NOOP = "skns.executor.handlers:noop"


@dataclasses.dataclass
class Settings:
    """What the executor phases run with (the bench's knobs)."""

    events: int  # of the CPU phase
    kills: int
    partitions: int
    replicas: int
    lease_ttl: float
    workload: int = 10_000  # the statement's: 10,000 events, 1 s handler

    def cluster(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "replicas": self.replicas,
            "lease_ttl": self.lease_ttl,
            "publish_timeout": 5.0,
        }


class _Tree:
    """CPU seconds of one host's processes by role, read from /proc."""

    def __init__(self, host: Host) -> None:
        self.procs: dict[str, list[psutil.Process]] = {
            "supervisor": [psutil.Process(host.service.pid)]
        }
        for child in host.service.children():
            if child["pid"]:
                role = child["role"].removeprefix("executor-")
                self.procs.setdefault(role, []).append(psutil.Process(child["pid"]))

    def cpu(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for role, procs in self.procs.items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    out[role] += sum(proc.cpu_times()[:2])
        return out


def _done(hosts: list[Host]) -> int:
    return sum(s.get("done", 0) for host in hosts for s in host.stats("executor-shard"))


def _nodes_cpu(nats: NatsCluster) -> float:
    total = 0.0
    for node in nats.nodes:
        if node.process is not None:
            with contextlib.suppress(psutil.Error):
                total += sum(psutil.Process(node.process.pid).cpu_times()[:2])
    return total


@dataclasses.dataclass
class _Cpu:
    """One mode's CPU-phase figures."""

    per_event: Counter[str]  # µs by role
    rate: float  # events/s
    idle: float  # ms of CPU a second, all of its hosts' processes, idle
    nodes: float = 0.0  # µs of the NATS nodes per event

    @property
    def work(self) -> float:
        return self.per_event["router"] + self.per_event["shard"]

    @property
    def net(self) -> float:
        """Router + shards less what they would have used idle over the same time."""
        return self.work - self.idle / 1000 / self.rate * 1e6

    def __str__(self) -> str:
        p = self.per_event
        return (
            f"{self.work:.1f} µs (router {p['router']:.1f} + shards {p['shard']:.1f}), "
            f"{self.net:.1f} net of idle; {self.rate:,.0f} events/s; idle {self.idle:.0f} ms/s"
        )


def _cpu_run(hosts: list[Host], nats: NatsCluster | None, count: int, seed: int) -> _Cpu:
    trees = [_Tree(host) for host in hosts]
    idle_from = sum((t.cpu() for t in trees), Counter())
    time.sleep(2.0)
    idle = (sum(sum(t.cpu().values()) for t in trees) - sum(idle_from.values())) / 2.0 * 1000
    rng = random.Random(seed)
    events = [{"account_id": rng.randrange(ACCOUNTS), "payload": {}} for _ in range(count)]
    share = -(-count // len(hosts))
    parts = [(host, events[i * share : (i + 1) * share]) for i, host in enumerate(hosts)]
    base = _done(hosts)
    before = sum((t.cpu() for t in trees), Counter())
    nodes_before = _nodes_cpu(nats) if nats else 0.0
    started = time.perf_counter()
    send_at_once(parts, batch=100, pipelined=False)
    wait_for(lambda: _done(hosts) >= base + count, 120, f"{count} events done")
    elapsed = time.perf_counter() - started
    after = sum((t.cpu() for t in trees), Counter())
    per_event = Counter({role: (after[role] - before[role]) / count * 1e6 for role in after})
    nodes = (_nodes_cpu(nats) - nodes_before) / count * 1e6 if nats else 0.0
    return _Cpu(per_event, count / elapsed, idle, nodes)


def cpu_rows(nats: NatsCluster, root: Path, s: Settings) -> list[Row]:
    progress(f"executor: CPU per event, {s.events:,} events, handler noop, 2 shards a host")
    with running(None, root / "cpu-single", "s", handler=NOOP) as single_host:
        single = _cpu_run(single_host, None, s.events, seed=1)
    progress(f"  single host: {single}")
    with running(nats, root / "cpu", "ab", cluster=s.cluster(), handler=NOOP) as pair:
        _wait_balanced(pair, s.partitions, 60)
        cluster = _cpu_run(pair, nats, s.events, seed=1)
    progress(f"  cluster: {cluster}; NATS nodes {cluster.nodes:.1f} µs an event")
    work = cluster.work / single.work if single.work else 0.0
    net = cluster.net / single.net if single.net else 0.0
    return [
        Row(
            "executor: CPU per event, noop handler, router + shards, 2 hosts x 2 shards",
            str(cluster),
            f"single host, 2 shards: {single}",
            f"{work:.2f}x, {net:.2f}x net (goal <= 2x: {'met' if work <= 2 else 'not met'})",
        ),
        Row("  NATS nodes' CPU per event, those 2 hosts", f"{cluster.nodes:.1f} µs"),
    ]


def workload_rows(nats: NatsCluster, root: Path, s: Settings) -> list[Row]:
    progress(f"executor: {s.workload:,} events, {ACCOUNTS:,} accounts, 1 s handler, 2 hosts")
    events, bound = statement_workload(s.workload, ACCOUNTS)
    half = len(events) // 2
    pair = running(nats, root / "workload", "ab", cluster=s.cluster(), duration=1.0)
    with pair as hosts:
        _wait_balanced(hosts, s.partitions, 60)
        started = time.time()
        acked = send_at_once([(hosts[0], events[:half]), (hosts[1], events[half:])], batch=500)
        runs = _all_ran(hosts, acked, bound * 2 + 60)
    verdict, earlier = _checked(acked, runs)
    total = verdict.last - started
    progress(f"  {total:.2f} s for a lower bound of {bound:.0f} s; {_said(verdict, earlier)}")
    share = total / bound
    return [
        Row(
            f"executor: {s.workload:,} events, {ACCOUNTS:,} accounts, 1 s handler, "
            "half to each of 2 hosts",
            f"{total:.2f} s ({_said(verdict, earlier)})",
            f"lower bound {bound:.0f} s",
            f"{share:.3f}x (goal <= 1.05: {'met' if share <= 1.05 and verdict.ok else 'not met'})",
        )
    ]


def _all_ran(hosts: list[Host], acked: dict[int, Any], timeout: float) -> list[list[Any]]:
    """Every run once all acked events ran, or at the timeout: then the verdict counts the
    missing ones (a row that says so, not a bench that stops)."""
    try:
        return wait_all_ran(hosts, acked, timeout)
    except AssertionError as exc:
        progress(f"  after {timeout:.0f} s: {exc}")
        return all_records(hosts)


def _checked(acked: dict[int, Any], runs: list[list[Any]]) -> tuple[Verdict, int]:
    """The cluster verdict (:func:`~skns.executor.clusterhosts.check`: every acked event ran,
    first runs in order per account) on this phase's events, and how many runs were of an
    earlier phase's events (the stream is shared by the phases: a new owner runs again what
    its predecessor finished but had not committed when it stopped)."""
    first = min(acked)
    mine = [run for run in runs if run[0] >= first]
    return check(acked, mine), len(runs) - len(mine)


def _said(verdict: Verdict, earlier: int) -> str:
    text = "all ran, first runs in order per account"
    if not verdict.ok:
        text = verdict.summary().splitlines()[0]
    elif verdict.duplicates:
        text += f"; {verdict.duplicates} ran again (at least once)"
    return text + (f"; {earlier} runs of earlier phases' events" if earlier else "")


def _wait_balanced(hosts: list[Host], partitions: int, timeout: float) -> list[int]:
    """Until :func:`~skns.executor.clusterhosts.balanced`; each host's partition count then
    (or at the timeout, if never)."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: balanced(hosts, partitions), timeout, "partitions balanced")
    return [len(host.owned()) for host in hosts]


def _one_account_each(partitions: int) -> list[int]:
    """An account of every partition, in partition order."""
    found: dict[int, int] = {}
    account = 0
    while len(found) < partitions:
        found.setdefault(partition_of(account, partitions), account)
        account += 1
    return [found[p] for p in range(partitions)]


@dataclasses.dataclass
class _Kill:
    ran: float  # s from the kill until every dead partition ran an event on the survivor
    owned: float  # s until the survivor's status showed them all owned
    moved: int
    balance: list[int]  # partitions per host once settled after the restart


def _kill_once(
    hosts: dict[str, Host], victim: str, survivor: str, accounts: list[int], s: Settings
) -> tuple[_Kill, Feeder]:
    """Kill -9 ``victim`` while feeding ``survivor``; start it again; the figures, and the
    feeder (what it had acked)."""
    dead = hosts[victim].owned()
    # One event to each partition every 100 ms, for up to 2 minutes.
    frames = [{"account_id": a, "payload": {}} for a in accounts] * 1200
    feeder = Feeder(hosts[survivor], frames, batch=len(accounts), pause=0.1)
    feeder.start()
    wait_for(lambda: feeder.acked or feeder.errors or feeder.cut, 30, "the feeder's first ack")
    killed = time.time()
    hosts[victim].kill()
    owned_at = 0.0
    first_run: dict[int, float] = {}
    deadline = time.monotonic() + 60
    while (len(first_run) < len(dead) or not owned_at) and time.monotonic() < deadline:
        if not owned_at and dead <= hosts[survivor].owned():
            owned_at = time.time()
        for _seq, account, _pid, when, _attempt in hosts[survivor].records():
            p = partition_of(account, s.partitions)
            if when > killed and p in dead and (p not in first_run or when < first_run[p]):
                first_run[p] = when
        time.sleep(0.1)
    feeder.stop()
    ran = max(first_run.values()) - killed if len(first_run) == len(dead) else float("inf")
    owned = owned_at - killed if owned_at else float("inf")
    hosts[victim].restart()  # same name, state directory (instance) and port
    hosts[victim].wait_ready()
    balance = _wait_balanced(list(hosts.values()), s.partitions, 60)
    return _Kill(ran, owned, len(dead), balance), feeder


def failover_rows(nats: NatsCluster, root: Path, s: Settings) -> list[Row]:
    progress(
        f"executor: failover, {s.kills} kills -9 of a whole host, {s.partitions} partitions, "
        f"lease_ttl {s.lease_ttl} s"
    )
    names = ["a", "b"]
    accounts = _one_account_each(s.partitions)
    acked: dict[int, Any] = {}
    refused = 0
    kills: list[_Kill] = []
    with running(nats, root / "failover", "ab", cluster=s.cluster()) as started:
        hosts = dict(zip(names, started, strict=True))
        first = _wait_balanced(started, s.partitions, 60)
        for k in range(s.kills):
            victim, survivor = names[k % 2], names[1 - k % 2]
            kill, feeder = _kill_once(hosts, victim, survivor, accounts, s)
            kills.append(kill)
            acked.update(feeder.acked)
            refused += len(feeder.errors) + feeder.cut
            progress(
                f"  kill {k + 1} ({victim}): {kill.moved} partitions ran again on {survivor} "
                f"after {kill.ran:.2f} s (owned after {kill.owned:.2f} s); "
                f"balanced again: {kill.balance}"
            )
        runs = _all_ran(started, acked, 60)
    verdict, earlier = _checked(acked, runs)
    ran = sorted(k.ran for k in kills)
    owned = sorted(k.owned for k in kills)
    spread = max(max(c) - min(c) for c in [first, *(k.balance for k in kills)])
    worst = max(ran)
    return [
        Row(
            f"executor: failover after kill -9 of a host, {s.kills} kills, p50 / max",
            f"{statistics.median(ran):.2f} / {worst:.2f} s to run again "
            f"(owned: {statistics.median(owned):.2f} / {max(owned):.2f} s)",
            f"lease_ttl {s.lease_ttl:g} s",
            f"goal <= 5 s: {'met' if worst <= 5 else 'not met'}",
        ),
        Row(
            "  every acked event of the failover runs ran, first runs in order per account",
            _said(verdict, earlier) + (f"; {refused} frames refused or cut off" if refused else ""),
            f"{len(acked):,} events (at least once)",
        ),
        Row(
            f"executor: partition balance, 2 hosts, {s.partitions} partitions, max - min",
            f"{spread} (at start {first}; after each restart "
            + ", ".join(str(k.balance) for k in kills)
            + ")",
            "",
            f"goal <= 1: {'met' if spread <= 1 else 'not met'}",
        ),
    ]


def rows(nats: NatsCluster, root: Path, s: Settings) -> list[Row]:
    return [*cpu_rows(nats, root, s), *workload_rows(nats, root, s), *failover_rows(nats, root, s)]
