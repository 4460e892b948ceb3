"""``skns-ctl bench messenger``: the 50 x 100 load client and the group-commit benchmark.

With ``--url`` (repeatable) it loads running replicas once and checks the four
rules on every answer (and on the table with ``--dsn``). Without, it starts a
throwaway PostgreSQL cluster (fsync on, synchronous_commit on) and two replica
processes on free loopback ports, runs the same load twice, with group commit
and with one transaction per request (batching off), each on a fresh
database, and prints both beside each other with their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

from ..config import Settings
from . import rules
from .load import NAMES, Load, LoadResult
from .local import LocalReplicas, local_settings
from .pgcluster import Cluster, create_database
from .replica import stored_rows
from .settings import MessengerSettings

GOAL_THROUGHPUT = 3000.0  # req/s with group commit, client included, on 2 cores
GOAL_RATIO = 5.0  # over one transaction per request
OTHERS = "other processes"


@dataclasses.dataclass
class Run:
    label: str
    result: LoadResult
    verdict: rules.Verdict
    cpu: dict[str, float]  # share of one core per party during the run, in %
    replica_stats: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    transactions: int = 0  # committed by the replicas during the run (0: unknown)


def _progress(load: Load, label: str, started: float, end: str) -> None:
    width = 30
    filled = width * load.done // max(load.total, 1)
    elapsed = time.perf_counter() - started
    rate = load.done / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(
        f"\r  {label:<28} [{'#' * filled}{'.' * (width - filled)}]"
        f" {load.done:>6}/{load.total} {rate:7.0f} req/s{end}"
    )
    sys.stderr.flush()


async def _run_with_progress(load: Load, label: str) -> LoadResult:
    # Redraw one line on a terminal; into a file or pipe, a line every second.
    tty = sys.stderr.isatty()
    started = time.perf_counter()
    task = asyncio.ensure_future(load.run())
    while not task.done():
        await asyncio.wait({task}, timeout=0.25 if tty else 1.0)
        if tty or not task.done():
            _progress(load, label, started, "" if tty else "\n")
    _progress(load, label, started, "\n")
    return task.result()


def _warm_up(urls: list[str], requests: int) -> None:
    """Open the pools' connections and let PostgreSQL prepare its plans; not measured."""
    if requests > 0:
        result = uvloop.run(Load(urls, min(10, requests), max(1, requests // 10)).run())
        if result.errors:
            raise SystemExit(f"warm-up failed: {dict(result.errors)}")


class CpuMeter:
    """Share of a core each party used between start() and stop() (100% = one core).

    A party is a list of pids; with ``tree`` its descendants count too (PostgreSQL's
    backends under the postmaster), as found at start and at stop. The machine's
    busy time beyond the parties' is reported as ``OTHERS``: on a shared machine,
    the cores other programs took from the run.
    """

    def __init__(self, parties: dict[str, list[int]], tree: frozenset[str] = frozenset()) -> None:
        self.parties = parties
        self.tree = tree
        self._procs: dict[int, psutil.Process] = {}
        self._before: dict[int, float] = {}
        self._started = 0.0
        self._machine = 0.0

    @staticmethod
    def _machine_busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)

    def _pids(self, party: str) -> set[int]:
        pids = set()
        for pid in self.parties[party]:
            with contextlib.suppress(psutil.Error):
                proc = self._procs.setdefault(pid, psutil.Process(pid))
                pids.add(pid)
                if party in self.tree:
                    for child in proc.children(recursive=True):
                        self._procs.setdefault(child.pid, child)
                        pids.add(child.pid)
        return pids

    def _cpu(self, pid: int) -> float | None:
        try:
            t = self._procs[pid].cpu_times()
        except psutil.Error:
            return None
        return t.user + t.system

    def start(self) -> None:
        self._started = time.perf_counter()
        self._machine = self._machine_busy()
        for party in self.parties:
            for pid in self._pids(party):
                self._before[pid] = self._cpu(pid) or 0.0

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._started
        out = {}
        for party in self.parties:
            used = 0.0
            for pid in self._pids(party):
                now = self._cpu(pid)
                if now is not None:
                    used += now - self._before.get(pid, 0.0)
            out[party] = 100 * used / wall
        machine = 100 * (self._machine_busy() - self._machine) / wall
        out[OTHERS] = max(0.0, machine - sum(out.values()))
        return out


def _measure(
    label: str,
    urls: list[str],
    args: argparse.Namespace,
    parties: dict[str, list[int]],
    settings_for_table: Settings | None = None,
) -> Run:
    load = Load(urls, args.coroutines, args.requests, NAMES[: args.senders], seed=args.seed)
    meter = CpuMeter(parties, tree=frozenset({"postgres"}))
    meter.start()
    result = uvloop.run(_run_with_progress(load, label))
    cpu = meter.stop()
    table = None
    if settings_for_table is not None:
        table = [rules.Message.from_row(r) for r in asyncio.run(stored_rows(settings_for_table))]
    verdict = rules.check(result.answers(), table)
    return Run(label, result, verdict, cpu)


def _replica_stats(replicas: LocalReplicas) -> list[dict[str, Any]]:
    return [orjson.loads(blob) for blob in replicas.stats() if blob]


def _transactions(stats: list[dict[str, Any]]) -> int:
    return sum(s.get("transactions", 0) for s in stats)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _rules_cell(verdict: rules.Verdict) -> str:
    where = "answers + table" if verdict.rows is not None else "answers"
    if verdict.ok:
        return f"all hold ({where})"
    return "BROKEN: " + ", ".join(f"{r} x{verdict.counts[r]}" for r in verdict.broken())


def _table(runs: list[Run]) -> str:
    head = (
        "run",
        "requests",
        "errors",
        "total s",
        "req/s",
        "mean ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "tx",
        "msgs/tx",
        "rules",
    )
    rows = []
    for run in runs:
        r = run.result
        tx = run.transactions
        rows.append(
            (
                run.label,
                str(r.requests),
                str(sum(r.errors.values())),
                f"{r.elapsed:.2f}",
                f"{r.throughput:.0f}",
                _ms(r.mean),
                _ms(r.percentile(50)),
                _ms(r.percentile(95)),
                _ms(r.percentile(99)),
                _ms(max(r.latencies, default=float("nan"))),
                str(tx) if tx else "-",
                f"{r.ok / tx:.1f}" if tx else "-",
                _rules_cell(run.verdict),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _details(runs: list[Run]) -> list[str]:
    out = []
    for run in runs:
        if run.result.errors:
            out.append(f"{run.label}: errors {dict(run.result.errors)}")
        for rule in run.verdict.broken():
            for example in run.verdict.examples[rule]:
                out.append(f"{run.label}: {rule}: {example}")
        if run.cpu:
            share = ", ".join(f"{k} {v:.0f}%" for k, v in run.cpu.items())
            # CPU seconds per request: steadier than req/s on a machine shared with others.
            per = run.result.elapsed / max(run.result.requests, 1) * 1e6 / 100
            cost = ", ".join(f"{k} {v * per:.0f}" for k, v in run.cpu.items() if k != OTHERS)
            out.append(f"{run.label}: CPU during the run (100% = one core): {share}")
            out.append(f"{run.label}: CPU per request, microseconds: {cost}")
            ours = sum(v for k, v in run.cpu.items() if k != OTHERS) * per
            if run.cpu.get(OTHERS, 0.0) >= 25 and ours > 0:
                # Other programs took cores from the run: say what the cost implies.
                ceiling = (psutil.cpu_count() or 1) * 1e6 / ours
                out.append(
                    f"{run.label}: other processes took {run.cpu[OTHERS]:.0f}% of a core;"
                    f" at {ours:.0f} us of CPU per request, {psutil.cpu_count()} idle cores"
                    f" would cap this run near {ceiling:.0f} req/s (an estimate, not a measurement)"
                )
    return out


def _client_limit(runs: list[Run]) -> list[str]:
    """Whether the load client limited the figures: it runs in one process, on the same cores."""
    out = []
    for run in runs:
        client = run.cpu.get("client", 0.0)
        total = sum(v for k, v in run.cpu.items() if k != OTHERS)
        if not total:
            continue
        if client >= 85:
            verdict = "one process at ~a whole core: the client is the limit here"
        else:
            verdict = "not saturated, but it takes that share of the cores from the server side"
        share = f"{client / total:.0%} of the CPU the run spent"
        out.append(f"{run.label}: the load client used {share} ({verdict})")
    return out


def _bench(args: argparse.Namespace) -> int:
    n = args.coroutines * args.requests
    print(
        f"messenger: {args.coroutines} coroutines x {args.requests} requests = {n},"
        f" {args.replicas} replicas, throwaway PostgreSQL (fsync=on, synchronous_commit=on),"
        f" {psutil.cpu_count()} CPUs, client included, after {args.warmup} warm-up requests;"
        f" pool_size={args.pool_size} per replica,"
        f" batch_delay_ms={args.batch_delay_ms:g}",
        flush=True,
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="skns-bench-") as tmp, Cluster() as cluster:
        for batching, label in ((True, "group commit"), (False, "one transaction per request")):
            dsn = create_database(cluster.dsn, "bench_batched" if batching else "bench_single")
            settings = local_settings(
                Path(tmp),
                dsn=dsn,
                replicas=args.replicas,
                batching=batching,
                batch_delay_ms=args.batch_delay_ms,
                pool_size=args.pool_size,
            )
            with LocalReplicas(settings) as replicas:
                parties = {
                    "client": [os.getpid()],
                    "replicas": [p.pid for p in replicas.processes if p.pid],
                    "postgres": [cluster.postmaster_pid or 0],
                }
                _warm_up(replicas.urls, args.warmup)
                # Counters are published every 0.5 s: wait for the warm-up's to show.
                time.sleep(0.6 if args.warmup else 0.0)
                warm = _transactions(_replica_stats(replicas))
                run = _measure(label, replicas.urls, args, parties, settings)
            # Read after the stop: each replica publishes its final counters on the way out.
            run.replica_stats = _replica_stats(replicas)
            run.transactions = _transactions(run.replica_stats) - warm
            runs.append(run)
    print()
    print(_table(runs))
    print()
    batched, single = runs
    ratio = batched.result.throughput / single.result.throughput
    tput_ok = batched.result.throughput >= GOAL_THROUGHPUT
    print(
        f"group commit: {batched.result.throughput:.0f} req/s, p99"
        f" {_ms(batched.result.percentile(99))} ms (goal >= {GOAL_THROUGHPUT:.0f} req/s:"
        f" {'met' if tput_ok else 'NOT met'})"
    )
    print(
        f"ratio over one transaction per request: {ratio:.1f}x (goal >= {GOAL_RATIO:.0f}x:"
        f" {'met' if ratio >= GOAL_RATIO else 'NOT met'})"
    )
    for line in _details(runs):
        print(line)
    for line in _client_limit(runs):
        print(line)
    return _status(runs)


def _against(args: argparse.Namespace) -> int:
    n = args.coroutines * args.requests
    print(f"messenger: {args.coroutines} coroutines x {args.requests} requests = {n}", flush=True)
    table_settings = None
    if args.dsn:
        table_settings = local_settings(Path(tempfile.gettempdir()), dsn=args.dsn, replicas=1)
    run = _measure("load", args.url, args, {"client": [os.getpid()]}, table_settings)
    print()
    print(_table([run]))
    for line in _details([run]):
        print(line)
    for line in _client_limit([run]):
        print(line)
    return _status([run])


def _status(runs: list[Run]) -> int:
    return 0 if all(run.verdict.ok and not run.result.errors for run in runs) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="skns-ctl bench messenger",
        description="Load messenger replicas and check the rules on every answer. Without"
        " --url: start PostgreSQL and replicas, compare group commit with one transaction"
        " per request.",
    )
    parser.add_argument(
        "--url", action="append", help="a running replica's base URL (repeat for several)"
    )
    parser.add_argument(
        "--dsn", help="with --url: the replicas' PostgreSQL, to check the stored table too"
    )
    parser.add_argument("-c", "--coroutines", type=int, default=50)
    parser.add_argument("-n", "--requests", type=int, default=100, help="per coroutine")
    parser.add_argument("--senders", type=int, default=10, choices=range(1, len(NAMES) + 1))
    parser.add_argument("--replicas", type=int, default=2, help="without --url")
    parser.add_argument(
        "--warmup", type=int, default=200, help="without --url: unmeasured requests first"
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=MessengerSettings.pool_size,
        help="without --url: the replicas' pool_size",
    )
    parser.add_argument(
        "--batch-delay-ms",
        type=float,
        default=MessengerSettings.batch_delay_ms,
        help="without --url: the replicas' batch_delay_ms",
    )
    parser.add_argument("--seed", type=int, help="for the random choice of replica and sender")
    args = parser.parse_args(argv)
    if args.coroutines < 1 or args.requests < 1 or args.replicas < 1:
        parser.error("--coroutines, --requests and --replicas must be >= 1")
    return _against(args) if args.url else _bench(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
