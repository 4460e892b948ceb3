"""``python -m skns.relay``: the one-shot relay, and the simulator.

python -m skns.relay --source URL --sink URL --count N [--first-id 0] [--json]
    Relay N messages, print the report, exit 0 only if all N reached the
    sink in order.

python -m skns.relay sim [--port P] [--count N] [--window W] [--delay exp] ...
    Serve a simulated source (/raw-messages) and sink (/ordered-messages/NAME)
    until one sink has received every message, then print its report; exit 0
    if it got them all in order. The first line printed is the listening URL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
import uvloop

from .oneshot import format_report, relay_count
from .relay import Relay
from .settings import BUFFER_LIMIT_BYTES
from .sim import DELAYS, SINK_PREFIX, Simulator, Source, SourcePlan


def _first_id(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('an integer or "auto"') from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def relay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m skns.relay",
        description="Relay N messages from a source WebSocket to a sink WebSocket in id order. "
        "(`python -m skns.relay sim --help`: the simulator.)",
    )
    p.add_argument("--source", required=True, help="source URL, e.g. ws://host/raw-messages")
    p.add_argument("--sink", required=True, help="sink URL, e.g. ws://host/ordered-messages/me")
    p.add_argument("--count", required=True, type=_positive, help="messages to relay")
    p.add_argument(
        "--first-id",
        type=_first_id,
        default=None,
        metavar="ID|auto",
        help="the first id; auto (default): the lowest seen within --settle-ms",
    )
    p.add_argument("--settle-ms", type=int, default=200)
    p.add_argument(
        "--gap-timeout-ms", type=int, default=0, help="skip a missing id after this (0: never)"
    )
    p.add_argument("--buffer-limit", type=_positive, default=1_000_000)
    p.add_argument(
        "--buffer-limit-bytes",
        type=_positive,
        default=BUFFER_LIMIT_BYTES,
        help="most bytes of messages held; past it the source is not read (default 64 MiB)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        help="give up after this many seconds with nothing received",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def sim_parser() -> argparse.ArgumentParser:
    d = SourcePlan()
    p = argparse.ArgumentParser(
        prog="python -m skns.relay sim",
        description="Simulated source and sink for the relay, on one WebSocket port.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9130, help="0: any free port")
    p.add_argument("--count", type=_positive, default=d.count, help="distinct ids")
    p.add_argument("--start", type=int, default=d.start, help="first id")
    p.add_argument(
        "--window",
        type=_positive,
        default=d.window,
        help="ids land up to this many places from their sorted position",
    )
    p.add_argument(
        "--delay",
        choices=DELAYS,
        default=d.delay,
        help="distribution of the extra delay of late messages",
    )
    p.add_argument("--delay-ms", type=float, default=d.delay_ms, help="its mean (exp) or max")
    p.add_argument("--late", type=float, default=d.late, help="fraction of messages delayed")
    p.add_argument("--duplicates", type=float, default=d.duplicates, help="fraction sent twice")
    p.add_argument("--drops", type=float, default=d.drops, help="fraction never sent")
    p.add_argument("--rate", type=float, default=d.rate, help="messages/s; 0: as fast as possible")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--drop-after",
        type=int,
        default=0,
        help="cut each source connection after this many frames (0: never)",
    )
    p.add_argument("--replay", type=int, default=0, help="frames a reconnecting client gets again")
    p.add_argument(
        "--sink-drop-after",
        type=int,
        default=0,
        help="cut each sink connection after this many frames (0: never)",
    )
    p.add_argument("--timeout", type=float, default=0, help="give up after this many s (0: never)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


async def _run_sim(args: argparse.Namespace, plan: SourcePlan) -> dict[str, Any] | None:
    source = Source(plan.frames(), drop_after=args.drop_after, replay=args.replay)
    async with Simulator(source, args.host, args.port, sink_drop_after=args.sink_drop_after) as sim:
        print(
            f"listening on ws://{args.host}:{sim.port} (source {sim.source_url}, "
            f"sink ws://{args.host}:{sim.port}{SINK_PREFIX}NAME)",
            flush=True,
        )
        finished = asyncio.Event()

        async def watch() -> None:
            # Whichever sink completes first ends the run.
            while not any(s.complete.is_set() for s in sim.sinks.values()):
                await asyncio.sleep(0.01)
            finished.set()

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(finished.wait(), args.timeout or None)
        except TimeoutError:
            pass
        finally:
            watcher.cancel()
        # Let the relay close its sink connections (the handshake confirms delivery).
        for _ in range(200):
            if not any(s.open_connections for s in sim.sinks.values()):
                break
            await asyncio.sleep(0.01)
        if not sim.sinks:
            return None
        best = max(sim.sinks.values(), key=lambda s: len(s.seen))
        return best.report()


def sim_main(argv: list[str]) -> int:
    parser = sim_parser()
    args = parser.parse_args(argv)
    try:
        plan = SourcePlan(
            count=args.count,
            start=args.start,
            window=args.window,
            delay=args.delay,
            delay_ms=args.delay_ms,
            late=args.late,
            duplicates=args.duplicates,
            drops=args.drops,
            rate=args.rate,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        plan_report = uvloop.run(_run_sim(args, plan))
    except KeyboardInterrupt:
        return 130
    if plan_report is None:
        print("no sink connected", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(plan_report).decode(), flush=True)
    else:
        for key, value in plan_report.items():
            print(f"{key:14}{value}")
    return 0 if plan_report["complete"] else 1


def relay_main(argv: list[str]) -> int:
    args = relay_parser().parse_args(argv)
    relay = Relay(
        args.source,
        args.sink,
        first_id=args.first_id,
        gap_timeout_ms=args.gap_timeout_ms,
        settle_ms=args.settle_ms,
        buffer_limit=args.buffer_limit,
        buffer_limit_bytes=args.buffer_limit_bytes,
        count=args.count,
    )
    try:
        stats = uvloop.run(relay_count(relay, args.idle_timeout))
    except KeyboardInterrupt:
        return 130
    print(orjson.dumps(stats).decode() if args.json else format_report(stats), flush=True)
    return 0 if stats["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        return sim_main(argv[1:])
    return relay_main(argv)


if __name__ == "__main__":
    sys.exit(main())
