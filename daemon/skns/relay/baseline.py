"""BASELINE for the benchmark, not used by the service: the straightforward relay design.

A receiver task reads the source and puts each decoded message on an
``asyncio.Queue``; a sender task takes them off into a dict keyed by id and,
after each one, sends while the dict holds the next id. The same libraries as
the real relay (websockets, orjson, uvloop), so the benchmark compares designs,
not libraries. It has none of the relay's robustness (no reconnects, no
validation beyond what the happy path needs, no gap timeout): it exists to be
measured beside :mod:`skns.relay.relay`.

    python -m skns.relay.baseline --source URL --sink URL --count N [--first-id 0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson
import uvloop
from websockets.asyncio.client import connect

from .holdtime import HoldTimes

_clock = time.perf_counter_ns


async def relay_baseline(source: str, sink: str, count: int, first_id: int) -> dict[str, Any]:
    """Relay ``count`` messages the straightforward way; the same report keys as the relay's."""
    queue: asyncio.Queue[tuple[int, str, int]] = asyncio.Queue()
    holds = HoldTimes()
    sent = 0
    first_receipt: int | None = None
    last_send: int | None = None
    cpu = time.process_time()

    async with (
        connect(source, proxy=None, compression=None) as src,
        connect(sink, proxy=None, compression=None) as dst,
    ):

        async def receiver() -> None:
            nonlocal first_receipt
            async for frame in src:
                now = _clock()
                if first_receipt is None:
                    first_receipt = now
                await queue.put((orjson.loads(frame)["id"], frame, now))  # type: ignore[arg-type]

        async def sender() -> None:
            nonlocal sent, last_send
            pending: dict[int, tuple[str, int]] = {}
            next_id = first_id
            while sent < count:
                id_, frame, received = await queue.get()
                pending[id_] = (frame, received)
                while next_id in pending:
                    frame, received = pending.pop(next_id)
                    await dst.send(frame)
                    last_send = _clock()
                    holds.add(last_send - received)
                    sent += 1
                    next_id += 1

        receiving = asyncio.create_task(receiver())
        try:
            await sender()
        finally:
            receiving.cancel()
    run_s = (last_send - first_receipt) / 1e9 if first_receipt and last_send else 0.0
    return {
        "sent": sent,
        "count": count,
        "ok": sent == count,
        "hold": holds.summary_us(),
        "run_s": round(run_s, 6),
        "sent_per_s": round(sent / run_s) if run_s else None,
        "cpu_s": round(time.process_time() - cpu, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skns.relay.baseline", description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first-id", type=int, default=0)
    args = p.parse_args(argv)
    report = uvloop.run(relay_baseline(args.source, args.sink, args.count, args.first_id))
    print(orjson.dumps(report).decode(), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
