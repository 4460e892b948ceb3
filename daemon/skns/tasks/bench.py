"""``skns-ctl bench tasks``: the task server under load, beside the straightforward design.

Two servers are measured in the same run, each started here in its own process
on a free loopback port and stopped at the end:

* skns: the real server (:mod:`skns.tasks.server`) with its own worker pools;
* baseline: the same protocol over ``ProcessPoolExecutor`` + ``run_in_executor``
  + ``asyncio.wait_for`` (:mod:`skns.tasks.baseline`).

For each: (1) throughput and latency of small factorials (numbers 1..1000) from
``--clients`` concurrent connections, each doing round trips (request, ``result``
acknowledgement, ``success``) for ``--duration`` seconds, every result checked
digit for digit; (2) time-limit enforcement: a hard job that runs past a short
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection, connect

from .baseline import run_baseline
from .local import LocalServer, local_settings

HARD_LIMIT = 0.5  # seconds, for the overshoot phase
LONG_JOB = 300_000  # its factorial takes well over HARD_LIMIT (about 2 s here)


@dataclass
class Throughput:
    tasks: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds
    wall: float = 0.0
    client_cpu: float = 0.0  # fraction of one core used by this load generator
    server_cpu: float = 0.0  # fraction of one core: the server process
    workers_cpu: float = 0.0  # fraction of one core: its worker processes together

    @property
    def rate(self) -> float:
        return self.tasks / self.wall if self.wall else 0.0

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
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: float) -> None:
        self.label = label
        self.total = total

    def show(self, done: float, note: str) -> None:
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r  {self.label:<9} [{bar:<30}] {frac:4.0%}  {note:<40}")
        sys.stderr.flush()

    def end(self) -> None:
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
    server: LocalServer, clients: int, duration: float, warmup: float, progress: Progress
) -> Throughput:
    digits = _factorial_digits(server.settings.tasks.soft_max)
    result = Throughput()
    clock = time.perf_counter
    start = clock()
    measure_from = start + warmup
    until = measure_from + duration
    proc = psutil.Process(server.pid)
    jobs = [
        asyncio.create_task(_round_trips(server.url, until, measure_from, result, digits, seed))
        for seed in range(clients)
    ]
    await asyncio.sleep(max(0.0, measure_from - clock()))
    cpu0 = time.process_time()
    server0, workers0 = _cpu_seconds(proc)
    t0 = clock()
    while (now := clock()) < until and not all(j.done() for j in jobs):
        rate = result.tasks / (now - t0) if now > t0 else 0.0
        progress.show(now - start, f"{result.tasks:,} tasks  {rate:,.0f}/s")
        await asyncio.sleep(0.25)
    server1, workers1 = _cpu_seconds(proc)
    cpu1 = time.process_time()
    wall = clock() - t0
    for outcome in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(outcome, Exception):  # a connection failed: its client stopped
            result.errors += 1
    result.wall = duration
    result.client_cpu = (cpu1 - cpu0) / wall
    result.server_cpu = (server1 - server0) / wall
    result.workers_cpu = (workers1 - workers0) / wall
    progress.show(warmup + duration, f"{result.tasks:,} tasks  {result.rate:,.0f}/s")
    progress.end()
    return result


async def _submit(ws: ClientConnection, number: int) -> bytes:
    await ws.send(b'{"type":"factorial","number":%d}' % number, text=True)
    return await ws.recv(decode=False)


async def measure_enforcement(server: LocalServer, samples: int, progress: Progress) -> Enforcement:
    result = Enforcement()
    small_hard = server.settings.tasks.soft_max + 1
    async with connect(server.url, max_size=None, compression=None) as ws:
        for i in range(samples):
            progress.show(i, f"sample {i + 1} of {samples}")
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
    progress.show(samples, f"{samples} samples")
    progress.end()
    return result


def run_one(
    label: str, server: LocalServer, args: argparse.Namespace
) -> tuple[Throughput, Enforcement]:
    import uvloop

    async def phases() -> tuple[Throughput, Enforcement]:
        throughput = await measure_throughput(
            server,
            args.clients,
            args.duration,
            args.warmup,
            Progress(label, args.warmup + args.duration),
        )
        enforcement = await measure_enforcement(
            server, args.samples, Progress(f"{label} t/o", args.samples)
        )
        return throughput, enforcement

    server.start()
    try:
        return uvloop.run(phases())
    finally:
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
        f"{args.duration:g} s each; timeouts: {LONG_JOB}! against a {HARD_LIMIT:g} s hard limit, "
        f"{args.samples} samples; {len(os.sched_getaffinity(0))} CPUs",
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
        limit = "yes" if th.client_cpu >= 0.9 else "no"
        lines.append(
            f"{name}: CPU in cores: load generator {th.client_cpu:.2f} (the limit: {limit}), "
            f"server {th.server_cpu:.2f}, workers {th.workers_cpu:.2f}"
        )
    lines.append(f"wrong answers from skns: {t.errors + e.errors}")
    if bt and be:
        lines.append(f"wrong answers from the baseline: {bt.errors + be.errors}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="skns-ctl bench tasks", description=__doc__)
    parser.add_argument("--clients", type=int, default=100, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured first")
    parser.add_argument("--samples", type=int, default=5, help="timed-out jobs per server")
    parser.add_argument("--max-soft", type=int, default=1000, help="largest number submitted")
    parser.add_argument("--no-baseline", action="store_true", help="measure skns only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skns-bench-tasks-") as tmp:
        # One hard worker, so a job left running past its limit holds up the queue
        # (the baseline's flaw) instead of hiding behind a second idle worker.
        settings = local_settings(
            Path(tmp),
            soft_max=args.max_soft,
            hard_limit=HARD_LIMIT,
            hard_workers=1,
            result_ttl=60.0,
        )
        print(
            f"tasks bench: {args.clients} clients, {args.duration:g} s per server; "
            f"skns first, then the baseline",
            file=sys.stderr,
        )
        ours = run_one("skns", LocalServer(settings), args)
        base = None
        if not args.no_baseline:
            baseline_settings = local_settings(
                Path(tmp),
                soft_max=args.max_soft,
                hard_limit=HARD_LIMIT,
                hard_workers=1,
            )
            base = run_one(
                "baseline",
                LocalServer(
                    baseline_settings, target=lambda: run_baseline(baseline_settings.tasks)
                ),
                args,
            )
    print(report(args, ours, base))
    return 1 if ours[0].errors + ours[1].errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
