"""``skns-ctl bench executor``: generate events, run them, check and time the run.

Two runs, each on a fresh router and K shards forked here (real processes,
real sockets, the journal on and fsynced) in a temporary state directory:

1. *ordered*: E events (10,000) over A accounts (1,000), 1 s handler. The total
   time, from the first event sent to the last one finished, is set beside the
   lower bound (the busiest account's event count x the handler duration) and
   beside what one consumer per shard would need in the same configuration
   (per shard, the sum over its accounts of count x duration; the worst shard).
2. *throughput*: a zero-cost handler, events per second from ingest to completion.

The handler of both is ``skns.executor.handlers:record`` (``record_sync`` with
``--sync``: the same as a blocking function, run in the shard's threads), which
writes a line per finished event; the checker verifies from those lines that every acked
event ran exactly once and each account's events ran in arrival order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from .. import config
from ..ports import free_port
from .checker import Verdict, verify
from .handlers import read_records
from .launch import Family
from .ring import Ring


@dataclass
class Outcome:
    name: str
    events: int
    accounts: int
    duration: float
    shards: int
    total: float  # first send to last completion, seconds
    ingest: float  # first send to last ack, seconds
    client_cpu: float  # seconds of CPU the generator used
    lower_bound: float
    one_consumer: float
    verdict: Verdict


def choose_accounts(events: int, accounts: int, skew: float, rng: random.Random) -> list[int]:
    """Each event's account: uniform when ``skew`` is 0, else Zipf-like with that exponent."""
    if skew <= 0:
        return [rng.randrange(accounts) for _ in range(events)]
    weights = [1.0 / (rank + 1) ** skew for rank in range(accounts)]
    return rng.choices(range(accounts), weights=weights, k=events)


def one_consumer_per_shard(counts: Counter[int], shards: int, duration: float) -> float:
    """Time the known design needs: each shard runs its accounts' events one by one."""
    ring = Ring(shards)
    load = [0.0] * shards
    for account, count in counts.items():
        load[ring.shard_of(account)] += count * duration
    return max(load)


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, sent: int, acked: int, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self.tty else 2.0):
            return
        self._last = now
        width = 30
        filled = width * done // max(self.total, 1)
        line = (
            f"{self.label:<11} [{'#' * filled}{'.' * (width - filled)}] "
            f"sent {sent}/{self.total} acked {acked} done {done}"
        )
        end = "\n" if final or not self.tty else ""
        sys.stderr.write(("\r" if self.tty else "") + line + end)
        sys.stderr.flush()


def _frames(accounts: list[int], batch: int) -> Iterator[tuple[bytes, list[int]]]:
    for start in range(0, len(accounts), batch):
        chunk = accounts[start : start + batch]
        body = [
            {"account_id": a, "event_id": start + i, "payload": {"n": start + i}}
            for i, a in enumerate(chunk)
        ]
        yield orjson.dumps(body), chunk


async def _send_all(
    url: str,
    frames: list[tuple[bytes, list[int]]],
    window: int,
    acked: dict[int, int],
    sent: list[int],
) -> float:
    """Send every frame with up to ``window`` unacked; fill ``acked``; return the last-ack time."""
    async with connect(url, compression=None, max_size=None) as ws:
        room = asyncio.Semaphore(window)
        pending: asyncio.Queue[list[int] | None] = asyncio.Queue()

        async def receive() -> None:
            while True:
                accounts = await pending.get()
                if accounts is None:
                    return
                answer = orjson.loads(await ws.recv())
                if "ack" not in answer:
                    raise RuntimeError(f"executor refused a frame: {answer}")
                for seq, account in zip(answer["ack"], accounts, strict=True):
                    acked[seq] = account
                room.release()

        receiver = asyncio.create_task(receive())
        for data, accounts in frames:
            await room.acquire()
            if receiver.done():
                break
            await ws.send(data)
            pending.put_nowait(accounts)
            sent[0] += len(accounts)
        pending.put_nowait(None)
        await receiver
        return time.time()


async def _drive(
    family: Family, url: str, frames: list[tuple[bytes, list[int]]], plan: Plan
) -> tuple[dict[int, int], float, float, float]:
    acked: dict[int, int] = {}
    sent = [0]
    total = plan.events
    progress = Progress(plan.name, total)
    cpu0 = time.process_time()
    start = time.time()
    sender = asyncio.create_task(_send_all(url, frames, plan.window, acked, sent))
    ingest_end = 0.0
    while True:
        stats = family.stats()
        done = sum(s.get("done", 0) + s.get("failed", 0) for s in stats.values())
        progress.show(sent[0], len(acked), done)
        if sender.done() and not ingest_end:
            ingest_end = sender.result()
        if ingest_end and done >= total:
            break
        await asyncio.sleep(0.05)
    progress.show(sent[0], len(acked), done, final=True)
    return acked, start, ingest_end, time.process_time() - cpu0


@dataclass(frozen=True)
class Plan:
    name: str
    events: int
    accounts: int
    duration: float  # handler seconds
    shards: int
    skew: float  # 0: uniform accounts
    batch: int  # events per client frame
    window: int  # client frames sent and not yet acked
    journal: bool
    seed: int
    handler: str
    threads: int  # sync handler threads per shard; 0: the default


def run_once(plan: Plan) -> Outcome:
    chosen = choose_accounts(plan.events, plan.accounts, plan.skew, random.Random(plan.seed))
    frames = list(_frames(chosen, plan.batch))
    counts = Counter(chosen)
    tmp = Path(tempfile.mkdtemp(prefix="skns-bench-executor-"))
    try:
        port = free_port()
        settings = config.parse(
            {
                "service": {
                    "state_dir": str(tmp),
                    "control_socket": str(tmp / "run" / "control.sock"),
                    "log_level": "warning",
                },
                "executor": {
                    "listen": f"127.0.0.1:{port}",
                    "shards": plan.shards,
                    "handler": plan.handler,
                    **({"threads": plan.threads} if plan.threads else {}),
                    "duration": plan.duration,
                    "journal": plan.journal,
                },
            },
            tmp / "bench.toml",
        )
        with Family(settings) as family:
            family.wait_ready()
            url = f"ws://127.0.0.1:{port}/"
            acked, start, ingest_end, cpu = asyncio.run(_drive(family, url, frames, plan))
        verdict = verify(acked, read_records(tmp / "executor"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Outcome(
        name=plan.name,
        events=plan.events,
        accounts=plan.accounts,
        duration=plan.duration,
        shards=family.shards,
        total=verdict.last - start,
        ingest=ingest_end - start,
        client_cpu=cpu,
        lower_bound=max(counts.values()) * plan.duration,
        one_consumer=one_consumer_per_shard(counts, family.shards, plan.duration),
        verdict=verdict,
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(
    ordered: Outcome | None, fast: Outcome | None, ratio_goal: float, rate_goal: float
) -> str:
    rows = [["run", "events", "accounts", "shards", "figure", "baseline", "ratio", "goal", "check"]]
    if ordered is not None:
        o = ordered
        ratio = o.total / o.lower_bound if o.lower_bound else float("inf")
        met = "met" if ratio <= ratio_goal else "NOT met"
        rows.append(
            [
                f"ordered, {o.duration:g} s handler",
                str(o.events),
                str(o.accounts),
                str(o.shards),
                f"total {o.total:.2f} s",
                f"lower bound {o.lower_bound:.2f} s",
                f"{ratio:.3f}",
                f"<= {ratio_goal} {met}",
                "OK" if o.verdict.ok else "FAILED",
            ]
        )
        rows.append(
            [
                "",
                "",
                "",
                "",
                "",
                f"one consumer/shard {o.one_consumer:.0f} s",
                f"{o.total / o.one_consumer:.4f}" if o.one_consumer else "-",
                "",
                "",
            ]
        )
    if fast is not None:
        f = fast
        rate = f.events / f.total if f.total > 0 else float("inf")
        met = "met" if rate >= rate_goal else "NOT met"
        rows.append(
            [
                "zero-cost handler",
                str(f.events),
                str(f.accounts),
                str(f.shards),
                f"{rate:,.0f} events/s",
                f"goal {rate_goal:,.0f} events/s",
                f"{rate / rate_goal:.2f}",
                f">= {rate_goal:,.0f} {met}",
                "OK" if f.verdict.ok else "FAILED",
            ]
        )
        rows.append(
            [
                "",
                "",
                "",
                "",
                f"ingest {f.events / f.ingest:,.0f} ev/s" if f.ingest > 0 else "",
                f"generator CPU {f.client_cpu / f.total:.0%} of wall" if f.total > 0 else "",
                "",
                "",
                "",
            ]
        )
    return _table(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="skns-ctl bench executor", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=10_000, help="events of the ordered run")
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--duration", type=float, default=1.0, help="handler seconds (ordered run)")
    parser.add_argument(
        "--skew", type=float, default=0.0, help="0: uniform accounts, else Zipf exponent"
    )
    parser.add_argument("--shards", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--batch", type=int, default=100, help="events per client frame")
    parser.add_argument("--window", type=int, default=64, help="client frames awaiting acks")
    parser.add_argument("--no-journal", action="store_true", help="run without the journal")
    parser.add_argument("--fast-events", type=int, default=200_000, help="zero-cost run events")
    parser.add_argument("--only", choices=("ordered", "fast"), help="run just one of the two")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sync", action="store_true", help="a blocking handler (time.sleep, in threads)"
    )
    parser.add_argument("--threads", type=int, default=0, help="[executor] threads; 0: default")
    args = parser.parse_args(argv)
    common = {
        "accounts": args.accounts,
        "shards": args.shards or os.cpu_count() or 1,
        "skew": args.skew,
        "batch": args.batch,
        "window": args.window,
        "journal": not args.no_journal,
        "seed": args.seed,
        "handler": f"skns.executor.handlers:record{'_sync' if args.sync else ''}",
        "threads": args.threads,
    }
    ordered = fast = None
    if args.only != "fast":
        ordered = run_once(Plan("ordered", args.events, duration=args.duration, **common))
    if args.only != "ordered":
        fast = run_once(Plan("zero-cost", args.fast_events, duration=0.0, **common))
    print()
    print(
        f"executor: journal {'off' if args.no_journal else 'on (fsync)'}, "
        f"{args.batch} events per frame, {args.window} frames in flight, "
        f"handler {common['handler']}"
    )
    print(report(ordered, fast, 1.02, 30_000))
    ok = True
    for outcome in (ordered, fast):
        if outcome is not None:
            print(f"{outcome.name}: {outcome.verdict.summary()}")
            ok = ok and outcome.verdict.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
