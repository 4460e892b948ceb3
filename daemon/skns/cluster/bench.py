"""``skns-ctl bench cluster``: the task server in cluster mode, beside the single host.

Started here, stopped at the end: a throwaway 3-node JetStream cluster on loopback
(:mod:`skns.cluster.natscluster`, ``--replicas`` copies of every stream and bucket),
two task servers in cluster mode as hosts A and B, and one single-host task server
as the baseline, each with one soft worker. Measured in one run, so the machine's
load weighs on both alike (all of it shares this machine's cores: two "hosts" here
cannot compute faster than one):

1. round trip, one job at a time: submit ``{"type":"factorial","number":20}`` and
   wait for its ``success``: on the single host, and on A through the cluster
   (published, pulled by A or B, stored, announced, read back, pushed);
2. fetch on B of a finished task submitted on A (one key-value read);
3. submit rate: ``--jobs`` small jobs sent from ``--clients`` connections (half to A,
   half to B) as fast as acks come back: acks per second (a job is acked once
   JetStream holds it, replicated), and jobs completed per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from ..tasks.local import LocalServer, local_settings
from .natscluster import NatsCluster, find_server


async def _round_trips(url: str, count: int) -> list[float]:
    out = []
    async with connect(url, max_size=None) as ws:
        for _ in range(count):
            started = time.perf_counter()
            await ws.send('{"type":"factorial","number":20}')
            assert json.loads(await ws.recv())["type"] == "result"
            assert json.loads(await ws.recv())["type"] == "success"
            out.append(time.perf_counter() - started)
    return out


async def _fetches(a: str, b: str, count: int) -> list[float]:
    out = []
    async with connect(a, max_size=None) as on_a, connect(b, max_size=None) as on_b:
        for _ in range(count):
            await on_a.send('{"type":"factorial","number":20}')
            task_id = json.loads(await on_a.recv())["task_id"]
            await on_a.recv()
            started = time.perf_counter()
            await on_b.send(json.dumps({"type": "result", "task_id": task_id}))
            assert json.loads(await on_b.recv())["type"] == "success"
            out.append(time.perf_counter() - started)
    return out


async def _flood(urls: list[str], clients: int, jobs: int) -> tuple[float, float]:
    """(acks per second, completions per second) of ``jobs`` jobs from ``clients`` clients."""
    per_client = jobs // clients
    acked_at: list[float] = []

    async def one(url: str) -> None:
        async with connect(url, max_size=None) as ws:
            pending = 0
            for i in range(per_client):
                await ws.send(json.dumps({"type": "factorial", "number": 10 + i % 90}))
                pending += 1
                # Read the ack of this job (and any pushed outcomes before it).
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "result":
                        acked_at.append(time.perf_counter())
                        break
                    pending -= 1
            while pending:
                await ws.recv()
                pending -= 1

    started = time.perf_counter()
    await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(clients)))
    ended = time.perf_counter()
    total = per_client * clients
    return total / (max(acked_at) - started), total / (ended - started)


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="skns-ctl bench cluster", description=__doc__)
    parser.add_argument("--trips", type=int, default=200, help="sequential round trips")
    parser.add_argument("--jobs", type=int, default=4000, help="jobs of the submit-rate phase")
    parser.add_argument("--clients", type=int, default=8, help="connections of that phase")
    parser.add_argument("--replicas", type=int, default=3, choices=(1, 3))
    args = parser.parse_args(argv)
    if find_server() is None:
        print("nats-server is not installed (apt-get install nats-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="skns-bench-cluster-") as tmp, NatsCluster(3) as nc:
        common = {"soft_workers": 1, "hard_workers": 1}
        table = {"nats": nc.urls, "replicas": args.replicas}
        single = LocalServer(local_settings(Path(tmp) / "single", **common))
        a = LocalServer(local_settings(Path(tmp) / "a", cluster={**table, "name": "a"}, **common))
        b = LocalServer(local_settings(Path(tmp) / "b", cluster={**table, "name": "b"}, **common))
        with single, a, b:
            print(
                f"cluster bench: 3 NATS nodes, replicas {args.replicas}, hosts a and b "
                f"(1 soft worker each) beside one single host; {args.trips} round trips, "
                f"{args.jobs} jobs from {args.clients} clients",
                file=sys.stderr,
            )
            single_trips = asyncio.run(_round_trips(single.url, args.trips))
            cluster_trips = asyncio.run(_round_trips(a.url, args.trips))
            fetches = asyncio.run(_fetches(a.url, b.url, args.trips))
            single_rate = asyncio.run(_flood([single.url], args.clients, args.jobs))
            cluster_rate = asyncio.run(_flood([a.url, b.url], args.clients, args.jobs))
    ratio = statistics.median(cluster_trips) / statistics.median(single_trips)
    print(
        "\n".join(
            [
                f"round trip, single host:        {_ms(single_trips)}",
                f"round trip, cluster (a -> any): {_ms(cluster_trips)}  ({ratio:.1f}x)",
                f"fetch on b of a task of a:      {_ms(fetches)}",
                f"submit rate, single host:       {single_rate[0]:.0f} acks/s, "
                f"{single_rate[1]:.0f} jobs done/s",
                f"submit rate, cluster (a + b):   {cluster_rate[0]:.0f} acks/s, "
                f"{cluster_rate[1]:.0f} jobs done/s "
                f"({cluster_rate[0] / single_rate[0]:.2f}x acks)",
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
