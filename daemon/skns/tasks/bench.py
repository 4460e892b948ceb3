"""``skns-ctl bench tasks``: the task server under load, beside the straightforward design.

Two servers are measured in the same run, both started here in processes of
their own on free loopback ports and stopped at the end:

* skns: the real server (:mod:`skns.tasks.server`) with its own worker pools;
* baseline: the same protocol over ``ProcessPoolExecutor`` + ``run_in_executor``
  + ``asyncio.wait_for`` (:mod:`skns.tasks.baseline`).

For each: (1) throughput and latency of small factorials (numbers 1..1000) from
``--clients`` concurrent connections, each doing round trips (request, ``result``
acknowledgement, ``success``), every result checked digit for digit, for
``--duration`` seconds in all, split into ``--rounds`` that alternate between
the two servers, so that a change in the machine's load (it is shared) weighs
on both alike; (2) time-limit enforcement: a hard job that runs past a short
limit (0.5 s): the overshoot from the limit to the "Timeout error" frame, and
how long until the hard queue (one worker) serves the next job.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection, connect

from ..child import ChildContext, enter
from ..config import Settings
from ..shm import SlotTable
from .baseline import run_baseline
from .local import LocalServer, local_settings
from .server import TaskServer
from .service import children

HARD_LIMIT = 0.5  # seconds, for the overshoot phase
LONG_JOB = 300_000  # its factorial takes well over HARD_LIMIT (about 2 s here)


@dataclass
class Throughput:
    """Round trips measured against one server, summed over the rounds."""

    tasks: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds
    wall: float = 0.0  # seconds measured
    # CPU seconds while measured: this load generator, the server process, its workers.
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    workers_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.tasks / self.wall if self.wall else 0.0

    def cores(self, cpu_seconds: float) -> float:
        return cpu_seconds / self.wall if self.wall else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Enforcement:
    overshoots: list[float] = field(default_factory=list)  # seconds past the limit
    recoveries: list[float] = field(default_factory=list)  # seconds until the next hard job ends
    next_timed_out: int = 0  # next hard jobs that timed out too (held up by the first)
    errors: int = 0


class Progress:
    """A one-line progress bar on stderr over a phase of ``total`` units (seconds, samples)."""

    def __init__(self, label: str, total: float) -> None:
        self.label = label
        self.total = total
        self.done = 0.0  # units finished in earlier steps

    def advance(self, within_step: float, note: str) -> None:
        frac = min(1.0, (self.done + within_step) / self.total) if self.total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r  {self.label:<12} [{bar:<30}] {frac:4.0%}  {note:<44}")
        sys.stderr.flush()

    def commit(self, step: float) -> None:
        self.done += step

    def end(self, note: str) -> None:
        self.advance(0.0, note)
        sys.stderr.write("\n")
        sys.stderr.flush()


def _factorial_digits(maximum: int) -> list[bytes]:
    """The decimal digits of n! for n in 0..maximum, to check every answer."""
    sys.set_int_max_str_digits(0)
    digits = []
    value = 1
    for n in range(maximum + 1):
        if n:
            value *= n
        digits.append(str(value).encode())
    return digits


def _task_id(frame: bytes) -> bytes:
    start = frame.index(b'"task_id":"') + 11
    return frame[start : frame.index(b'"', start)]


async def _round_trips(
    url: str, until: float, measure_from: float, result: Throughput, digits: list[bytes], seed: int
) -> None:
    rng = random.Random(seed)
    top = len(digits) - 1
    clock = time.perf_counter
    async with connect(url, max_size=None, compression=None) as ws:
        while (t0 := clock()) < until:
            n = rng.randint(1, top)
            await ws.send(b'{"type":"factorial","number":%d}' % n, text=True)
            ack = await ws.recv(decode=False)
            done = await ws.recv(decode=False)
            t1 = clock()
            expected = b'{"type":"success","task_id":"%s","result":%s}' % (_task_id(ack), digits[n])
            if done != expected:
                result.errors += 1
            elif measure_from <= t0 and t1 <= until:
                result.tasks += 1
                result.latencies.append(t1 - t0)


def _cpu_seconds(process: psutil.Process) -> tuple[float, float]:
    """CPU seconds of the server process and of its live worker processes."""
    times = process.cpu_times()
    workers = 0.0
    for child in process.children():
        try:
            t = child.cpu_times()
            workers += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return times.user + times.system, workers


async def measure_throughput(
    server: LocalServer,
    clients: int,
    duration: float,
    warmup: float,
    result: Throughput,
    digits: list[bytes],
    progress: Progress,
    label: str,
) -> None:
    """One round: ``clients`` connections for ``warmup`` + ``duration`` s, added to ``result``."""
    clock = time.perf_counter
    start = clock()
    measure_from = start + warmup
    until = measure_from + duration
    proc = psutil.Process(server.pid)
    tasks_before = result.tasks
    jobs = [
        asyncio.create_task(_round_trips(server.url, until, measure_from, result, digits, seed))
        for seed in range(clients)
    ]
    await asyncio.sleep(max(0.0, measure_from - clock()))
    cpu0 = time.process_time()
    server0, workers0 = _cpu_seconds(proc)
    t0 = clock()
    while (now := clock()) < until and not all(j.done() for j in jobs):
        done = result.tasks - tasks_before
        rate = done / (now - t0) if now > t0 else 0.0
        progress.advance(now - start, f"{label}: {done:,} tasks  {rate:,.0f}/s")
        await asyncio.sleep(0.25)
    server1, workers1 = _cpu_seconds(proc)
    cpu1 = time.process_time()
    wall = max(clock() - t0, 1e-9)
    for outcome in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(outcome, Exception):  # a connection failed: its client stopped
            result.errors += 1
    # CPU is sampled over the loop above; the rate counts round trips within `duration`.
    result.wall += duration
    result.client_cpu += (cpu1 - cpu0) * duration / wall
    result.server_cpu += (server1 - server0) * duration / wall
    result.workers_cpu += (workers1 - workers0) * duration / wall
    progress.commit(warmup + duration)


async def _submit(ws: ClientConnection, number: int) -> bytes:
    await ws.send(b'{"type":"factorial","number":%d}' % number, text=True)
    return await ws.recv(decode=False)


async def measure_enforcement(
    server: LocalServer, samples: int, progress: Progress, label: str
) -> Enforcement:
    result = Enforcement()
    small_hard = server.settings.tasks.soft_max + 1
    async with connect(server.url, max_size=None, compression=None) as ws:
        for i in range(samples):
            progress.advance(0.0, f"{label}: sample {i + 1} of {samples}")
            progress.commit(1)
            t0 = time.perf_counter()
            ack = await _submit(ws, LONG_JOB)
            answer = await ws.recv(decode=False)
            t1 = time.perf_counter()
            if b'"Timeout error"' not in answer or _task_id(ack) not in answer:
                result.errors += 1
                continue
            result.overshoots.append(t1 - t0 - HARD_LIMIT)
            await _submit(ws, small_hard)
            answer = await ws.recv(decode=False)
            if b'"Timeout error"' in answer:
                result.next_timed_out += 1
            elif not answer.startswith(b'{"type":"success"'):
                result.errors += 1
            result.recoveries.append(time.perf_counter() - t1)
    return result


def _without_journal(settings: Settings) -> int:
    """The task server child as the supervisor runs it, but with no journal (nor a file
    kept at stop): what the journal costs is the difference."""

    def run(ctx: ChildContext) -> None:
        server = TaskServer(ctx.settings.tasks, ready=ctx.ready, listener=ctx.listener)
        ctx.serve(server.main, server.stats)

    (spec,) = children(settings)
    return enter(replace(spec, target=run), settings, SlotTable(1).slots[0])


Servers = dict[str, LocalServer]
Results = dict[str, tuple[Throughput, Enforcement]]


def run_all(servers: Servers, args: argparse.Namespace) -> Results:
    """Start every server, measure them round by round, stop them."""
    import uvloop

    async def phases() -> Results:
        soft_max = next(iter(servers.values())).settings.tasks.soft_max
        digits = _factorial_digits(soft_max)
        throughput = {label: Throughput() for label in servers}
        segment = args.duration / args.rounds
        progress = Progress("throughput", args.rounds * len(servers) * (args.warmup + segment))
        for round_no in range(1, args.rounds + 1):
            for label, server in servers.items():
                await measure_throughput(
                    server,
                    args.clients,
                    segment,
                    args.warmup,
                    throughput[label],
                    digits,
                    progress,
                    f"{label} round {round_no}/{args.rounds}",
                )
        progress.end(", ".join(f"{k}: {t.rate:,.0f}/s" for k, t in throughput.items()))
        progress = Progress("timeouts", args.samples * len(servers))
        enforcement = {}
        for label, server in servers.items():
            enforcement[label] = await measure_enforcement(server, args.samples, progress, label)
        progress.end(f"{args.samples} samples each")
        return {label: (throughput[label], enforcement[label]) for label in servers}

    try:
        for server in servers.values():
            server.start()
        return uvloop.run(phases())
    finally:
        for server in servers.values():
            server.stop()


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:,.1f}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _max(values: list[float]) -> float:
    return max(values) if values else float("nan")


def _ratio(ours: float, theirs: float, higher_is_better: bool) -> str:
    if math.isnan(ours) or math.isnan(theirs) or min(ours, theirs) <= 0:
        return "n/a"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


def report(
    args: argparse.Namespace,
    ours: tuple[Throughput, Enforcement],
    base: tuple[Throughput, Enforcement] | None,
) -> str:
    t, e = ours
    bt, be = base if base is not None else (None, None)
    rows: list[tuple[str, float, float | None, bool, bool]] = [
        # label, ours, baseline, higher is better, in ms
        ("throughput, tasks/s", t.rate, bt.rate if bt else None, True, False),
        ("latency p50, ms", t.percentile(0.50), bt.percentile(0.50) if bt else None, False, True),
        ("latency p99, ms", t.percentile(0.99), bt.percentile(0.99) if bt else None, False, True),
        ("latency max, ms", _max(t.latencies), _max(bt.latencies) if bt else None, False, True),
        (
            "timeout overshoot median, ms",
            _median(e.overshoots),
            _median(be.overshoots) if be else None,
            False,
            True,
        ),
        (
            "timeout overshoot max, ms",
            _max(e.overshoots),
            _max(be.overshoots) if be else None,
            False,
            True,
        ),
        (
            "next hard job answered after a timeout, ms",
            _median(e.recoveries),
            _median(be.recoveries) if be else None,
            False,
            True,
        ),
    ]
    lines = [
        "",
        f"tasks: factorials of 1..{args.max_soft} from {args.clients} concurrent clients, "
        f"{args.duration:g} s each in {args.rounds} alternating rounds; timeouts: {LONG_JOB}! "
        f"against a {HARD_LIMIT:g} s hard limit, {args.samples} samples; "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.1f}"
        + ("; skns WITHOUT its crash journal" if args.no_journal else ""),
        "",
        "| measure | skns pool | baseline (ProcessPoolExecutor + wait_for) | skns better by |",
        "|---|---:|---:|---:|",
    ]
    for label, value, other, higher, in_ms in rows:
        fmt = _ms if in_ms else (lambda v: f"{v:,.0f}")
        other_text = fmt(other) if other is not None else "not run"
        ratio = _ratio(value, other, higher) if other is not None else "n/a"
        lines.append(f"| {label} | {fmt(value)} | {other_text} | {ratio} |")
    lines.append(
        f"| next hard jobs that timed out too | {e.next_timed_out} of {len(e.recoveries)} | "
        + (f"{be.next_timed_out} of {len(be.recoveries)} |" if be else "not run |")
        + " |"
    )
    lines.append("")
    rate_ok = t.rate >= 2000
    over_ok = bool(e.overshoots) and _max(e.overshoots) <= 0.100
    lines.append(f"goal >= 2,000 tasks/s: {'met' if rate_ok else 'NOT met'} ({t.rate:,.0f}/s)")
    lines.append(
        f"goal timeout overshoot <= 100 ms: {'met' if over_ok else 'NOT met'}"
        f" (max {_ms(_max(e.overshoots))} ms)"
    )
    for name, th in (("skns", t), ("baseline", bt)):
        if th is None:
            continue
        client = th.cores(th.client_cpu)
        limit = "yes" if client >= 0.9 else "no"
        lines.append(
            f"{name}: CPU in cores: load generator {client:.2f} (the limit: {limit}), "
            f"server {th.cores(th.server_cpu):.2f}, workers {th.cores(th.workers_cpu):.2f}"
        )
    lines.append(f"wrong answers from skns: {t.errors + e.errors}")
    if bt and be:
        lines.append(f"wrong answers from the baseline: {bt.errors + be.errors}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="skns-ctl bench tasks", description=__doc__)
    parser.add_argument("--clients", type=int, default=100, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--rounds", type=int, default=5, help="alternations between the servers")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per round")
    parser.add_argument("--samples", type=int, default=5, help="timed-out jobs per server")
    parser.add_argument("--max-soft", type=int, default=1000, help="largest number submitted")
    parser.add_argument("--no-baseline", action="store_true", help="measure skns only")
    parser.add_argument(
        "--no-journal",
        action="store_true",
        help="run skns without its crash journal (to measure what the journal costs: "
        "compare with a run without this flag)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skns-bench-tasks-") as tmp:
        # One hard worker, so a job left running past its limit holds up the queue
        # (the baseline's flaw) instead of hiding behind a second idle worker.
        def settings() -> Settings:
            return local_settings(
                Path(tmp), soft_max=args.max_soft, hard_limit=HARD_LIMIT, hard_workers=1
            )

        ours = settings()
        servers: Servers = {
            "skns": LocalServer(ours, target=(lambda: _without_journal(ours)))
            if args.no_journal
            else LocalServer(ours)
        }
        if not args.no_baseline:
            baseline = settings()
            servers["baseline"] = LocalServer(baseline, target=lambda: run_baseline(baseline.tasks))
        print(
            f"tasks bench: {args.clients} clients, {args.duration:g} s per server "
            f"in {args.rounds} alternating rounds, then {args.samples} timeouts each",
            file=sys.stderr,
        )
        results = run_all(servers, args)
    ours = results["skns"]
    print(report(args, ours, results.get("baseline")))
    return 1 if ours[0].errors + ours[1].errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
