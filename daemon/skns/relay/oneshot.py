"""The original task in one run: relay N messages, report, and say whether all went in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .relay import Relay

_POLL = 0.05  # seconds between checks of the idle timeout


async def relay_count(relay: Relay, idle_timeout: float) -> dict[str, Any]:
    """Run ``relay`` until it has sent ``relay.count`` messages or the source goes quiet.

    Quiet means nothing received for ``idle_timeout`` seconds (counted from the
    start until the first message). Returns the relay's stats plus the verdict.
    """
    assert relay.count is not None
    stop = asyncio.Event()
    cpu = time.process_time()
    task = asyncio.create_task(relay.run(stop))
    started = time.perf_counter_ns()
    while not task.done():
        await asyncio.wait((task,), timeout=_POLL)
        last = relay.last_receipt if relay.last_receipt is not None else started
        if (time.perf_counter_ns() - last) / 1e9 > idle_timeout:
            stop.set()
    await task
    stats = report(relay)
    stats["cpu_s"] = round(time.process_time() - cpu, 3)  # the relay's CPU time for the run
    return stats


def report(relay: Relay) -> dict[str, Any]:
    """The relay's stats, plus ``ok``: all ``count`` sent, none skipped, the sink closed cleanly."""
    stats = relay.stats()
    problems = stats["problems"]
    if relay.sent < (relay.count or 0):
        problems.insert(0, f"sent {relay.sent} of {relay.count}")
    if relay.sink_close_code != 1000:
        problems.append(f"sink close code {relay.sink_close_code} (1000 confirms delivery)")
    stats["count"] = relay.count
    stats["ok"] = not problems
    return stats


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"


def format_report(stats: dict[str, Any]) -> str:
    """The report as text for people."""
    hold = stats["hold"]
    dropped = ", ".join(f"{k} {v}" for k, v in stats["dropped"].items() if v) or "none"
    rate = f" ({stats['sent_per_s']:,} msg/s)" if stats["sent_per_s"] else ""
    past = f", past the count: {stats['past_count']}" if stats.get("past_count") else ""
    verdict = (
        f"OK: all {stats['count']} messages sent in order, and no more"
        if stats["ok"]
        else "FAILED: " + "; ".join(stats["problems"])
    )
    return "\n".join(
        (
            f"received      {stats['received']}  (dropped: {dropped})",
            f"sent          {stats['sent']}  (skipped ids: {stats['skipped']}, "
            f"still held: {stats['buffered'] + stats['outbox']}{past})",
            f"total time    {stats['run_s']:.3f} s{rate}  (first receipt to last send)",
            f"hold time     min {_us(hold['min_us'])}  median {_us(hold['p50_us'])}  "
            f"p99 {_us(hold['p99_us'])}  max {_us(hold['max_us'])}",
            f"in order      {verdict}",
        )
    )
