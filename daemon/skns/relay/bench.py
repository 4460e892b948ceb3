"""``skns-ctl bench relay``: end-to-end throughput and hold time, relay beside the baseline.

Each run starts the simulator (``python -m skns.relay sim``) and then the relay
under test as two processes, each pinned to its own CPU when there are two, so
that the load generator does not steal the relay's core. The simulator
measures the end-to-end rate (first frame the source wrote to the last frame
the sink read) and checks order; the relay measures each message's hold time
(its receipt to the end of its send). Both report their CPU time: a process
busy for ~all of the run was the limit.

Designs: ``relay`` (:mod:`skns.relay.relay`, through its one-shot mode) and
``baseline`` (:mod:`skns.relay.baseline`: receiver task, asyncio.Queue, dict,
sender task). Scenarios: a flood of messages already in order (pure relay
overhead: the hold-time goal), a flood shuffled within a window with 1 %
arriving late, and messages in order at 20,000/s (the hold time of a message
that finds the relay idle).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from typing import Any

import orjson
import psutil

GOAL_RATE = 50_000  # messages/s end to end
GOAL_HOLD_P50_US = 100.0  # for messages that arrive in order

SCENARIOS: dict[str, list[str]] = {
    "in order": ["--window", "1", "--late", "0"],
    "shuffled": ["--window", "20", "--late", "0.01", "--delay", "exp", "--delay-ms", "1"],
    # Not a flood: the hold time of a message that finds the relay idle.
    "paced 20k": ["--window", "1", "--late", "0", "--rate", "20000"],
}
PACED = {"paced 20k"}  # their rate is the simulator's, not a throughput figure
DESIGNS: dict[str, list[str]] = {
    "relay": ["-m", "skns.relay"],
    "baseline": ["-m", "skns.relay.baseline"],
}
BUSY = 0.9  # CPU time / wall time above which a process was the limit


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        # Unpinned is still a valid run, only noisier.
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            psutil.Process(pid).cpu_affinity([cpu])


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return orjson.loads(line)
    raise RuntimeError(f"no JSON report in {text!r}")


def run_once(design: str, scenario: str, count: int, seed: int) -> dict[str, Any]:
    """One simulator + one relay process; their two reports."""
    cpus = sorted(psutil.Process().cpu_affinity() or [])
    sim_cpu, relay_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    sim = subprocess.Popen(
        [sys.executable, "-m", "skns.relay", "sim", "--port", "0", "--json", "--timeout", "120",
         "--count", str(count), "--seed", str(seed), *SCENARIOS[scenario]],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        match = re.match(r"listening on ws://127\.0\.0\.1:(\d+)", sim.stdout.readline())
        if match is None:
            raise RuntimeError("the simulator did not start")
        _pin(sim.pid, sim_cpu)
        base = f"ws://127.0.0.1:{match.group(1)}"
        relay = subprocess.Popen(
            [sys.executable, *DESIGNS[design], "--source", f"{base}/raw-messages",
             "--sink", f"{base}/ordered-messages/bench", "--count", str(count),
             "--first-id", "0", *(["--json"] if design == "relay" else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        _pin(relay.pid, relay_cpu)
        relay_out, _ = relay.communicate(timeout=180)
        sim_out, _ = sim.communicate(timeout=60)
    finally:
        for proc in (sim, locals().get("relay")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"relay": _last_json(relay_out), "sim": _last_json(sim_out)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by end-to-end rate, and what limited it."""
    runs = sorted(runs, key=lambda r: r["sim"]["per_s"] or 0)
    mid = runs[len(runs) // 2]
    sim, relay = mid["sim"], mid["relay"]
    sim_busy = sim["cpu_s"] / sim["total_s"] if sim["total_s"] else 0.0
    relay_busy = relay["cpu_s"] / relay["run_s"] if relay["run_s"] else 0.0
    limit = {
        (True, True): "both",
        (True, False): "simulator",
        (False, True): "relay",
        (False, False): "neither (CPU shared with others?)",
    }[sim_busy >= BUSY, relay_busy >= BUSY]
    return {
        "rate": sim["per_s"] or 0,
        # CPU per message: steadier than wall-clock rates on a shared machine.
        "relay_cpu_us": min(r["relay"]["cpu_s"] for r in runs) / runs[0]["sim"]["expected"] * 1e6,
        "rates": [r["sim"]["per_s"] or 0 for r in runs],
        "p50": relay["hold"]["p50_us"],
        "p99": relay["hold"]["p99_us"],
        "max": relay["hold"]["max_us"],
        "ok": all(r["sim"]["complete"] and r["relay"]["ok"] for r in runs),
        "sim_busy": sim_busy,
        "relay_busy": relay_busy,
        "limit": limit,
    }


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.1f} ms" if value >= 1000 else f"{value:.1f} µs"


def table(results: dict[tuple[str, str], dict[str, Any]], count: int) -> str:
    head = (
        f"{'scenario':10} {'design':9} {'msg/s end to end':>17} {'hold p50':>10} "
        f"{'hold p99':>10} {'hold max':>10} {'ordered':>8} {'CPU/msg':>8} {'sim busy':>8} "
        f"{'relay busy':>10}  limit"
    )
    lines = [
        f"relay benchmark: {count:,} messages per run ({count // 4:,} paced), loopback, "
        "median run by rate; "
        "CPU/msg: the relay process's CPU time per message (best run); busy: CPU time / wall "
        f"time; a process >= {BUSY:.0%} busy was the limit",
        head,
    ]
    lines.append("-" * len(head))
    for (scenario, design), r in results.items():
        lines.append(
            f"{scenario:10} {design:9} {r['rate']:>17,} {_us(r['p50']):>10} {_us(r['p99']):>10} "
            f"{_us(r['max']):>10} {'yes' if r['ok'] else 'NO':>8} {_us(r['relay_cpu_us']):>8} "
            f"{r['sim_busy']:>8.0%} {r['relay_busy']:>10.0%}  {r['limit']}"
        )
    lines.append("")
    for scenario in SCENARIOS:
        relay, base = results.get((scenario, "relay")), results.get((scenario, "baseline"))
        if relay is None or base is None or scenario in PACED:
            continue
        ratio = relay["rate"] / base["rate"] if base["rate"] else float("inf")
        hold = base["p50"] / relay["p50"] if relay["p50"] else float("inf")
        cpu = base["relay_cpu_us"] / relay["relay_cpu_us"]
        lines.append(
            f"{scenario}: relay/baseline throughput x{ratio:.2f}, CPU per message x{cpu:.2f} "
            f"lower, hold p50 x{hold:,.0f} lower; goal >= {GOAL_RATE:,} msg/s: "
            f"{'met' if relay['rate'] >= GOAL_RATE else 'NOT met'} "
            f"(relay alone on a core: ~{1e6 / relay['relay_cpu_us']:,.0f} msg/s)"
        )
    for scenario in ("in order", *PACED):
        in_order = results.get((scenario, "relay"))
        if in_order is not None:
            met = in_order["p50"] is not None and in_order["p50"] < GOAL_HOLD_P50_US
            lines.append(
                f"{scenario}: relay hold p50 {_us(in_order['p50'])}, goal < "
                f"{GOAL_HOLD_P50_US:.0f} µs {'met' if met else 'NOT met'}"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="skns-ctl bench relay", description=__doc__)
    p.add_argument("--count", type=int, default=100_000, help="messages per run")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario and design")
    p.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: all")
    args = p.parse_args(argv)
    scenarios = args.scenario or list(SCENARIOS)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    total = len(scenarios) * len(DESIGNS) * args.runs
    done = 0
    for scenario in scenarios:
        for design in DESIGNS:
            runs = []
            for n in range(args.runs):
                done += 1
                # A paced run lasts count/rate seconds: a quarter of the count is plenty.
                count = args.count // 4 if scenario in PACED else args.count
                run = run_once(design, scenario, count, seed=n)
                runs.append(run)
                print(
                    f"[{done}/{total}] {scenario}, {design}: {run['sim']['per_s'] or 0:,} msg/s, "
                    f"hold p50 {_us(run['relay']['hold']['p50_us'])}, "
                    f"{'in order' if run['sim']['complete'] else 'INCOMPLETE'}",
                    flush=True,
                )
            results[scenario, design] = summarize(runs)
    print()
    print(table(results, args.count))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
