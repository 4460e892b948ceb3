"""``skns-ctl bench cluster``: JetStream and cluster mode, beside their baselines.

Started here, stopped at the end: a throwaway 3-node JetStream cluster on loopback
(:mod:`skns.cluster.natscluster`). Phases (``--only``), each measured beside its
baseline in the same run, so the machine's load weighs on both alike (all of it
shares this machine's cores: two "hosts" here cannot compute faster than one):

- ``jetstream``: the figures a capacity plan needs, at replicas 3 beside 1
  (:mod:`skns.cluster.jsbench`): pipelined durable publishes over 64 subjects,
  key-value updates with the expected revision, ordered consumer reads, and the
  CPU each costs the client and each node.
- ``tasks``: two task servers in cluster mode as hosts A and B (``--replicas``
  copies of every stream and bucket) beside one single-host task server, each
  with one soft worker:

  1. round trip, one job at a time: submit ``{"type":"factorial","number":20}``
     and wait for its ``success``: on the single host, and on A through the
     cluster (published, pulled by A or B, stored, announced, read back, pushed);
  2. fetch on B of a finished task submitted on A (one key-value read);
  3. submit rate: ``--jobs`` small jobs sent from ``--clients`` connections (half
     to A, half to B) as fast as acks come back: acks per second (a job is acked
     once JetStream holds it, replicated), and jobs completed per second.

- ``executor``: whole executor hosts (``python -m skns``) in cluster mode beside a
  single host (:mod:`skns.cluster.execbench`): CPU per event with a zero-cost handler,
  the statement's workload split over two hosts against its lower bound, failover
  after a host's kill -9, and the partitions' balance.

Progress goes to stderr as it is measured; the table, at the end, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import astuple
from pathlib import Path

import psutil
from websockets.asyncio.client import connect

from ..ctl import table
from ..tasks.local import LocalServer, local_settings
from . import execbench
from .jsbench import Row, ms, progress, ratio
from .jsbench import rows as jetstream_rows
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


PHASES = ("jetstream", "tasks", "executor")


def _task_rows(urls: dict[str, str], trips: int, jobs: int, clients: int) -> list[Row]:
    progress(f"tasks: {trips} round trips, {jobs} jobs from {clients} clients")
    single_trips = asyncio.run(_round_trips(urls["single"], trips))
    progress(f"  round trip, single host: {ms(single_trips)}")
    cluster_trips = asyncio.run(_round_trips(urls["a"], trips))
    progress(f"  round trip, cluster: {ms(cluster_trips)}")
    fetches = asyncio.run(_fetches(urls["a"], urls["b"], trips))
    progress(f"  fetch on b: {ms(fetches)}")
    single = asyncio.run(_flood([urls["single"]], clients, jobs))
    progress(f"  submit rate, single host: {single[0]:,.0f} acks/s")
    cluster = asyncio.run(_flood([urls["a"], urls["b"]], clients, jobs))
    progress(f"  submit rate, cluster: {cluster[0]:,.0f} acks/s")
    return [
        Row(
            "tasks: round trip of factorial 20, cluster (a -> any)",
            ms(cluster_trips),
            f"single host: {ms(single_trips)}",
            ratio(statistics.median(cluster_trips), statistics.median(single_trips)),
        ),
        Row("tasks: fetch on b of a task of a", ms(fetches)),
        Row(
            f"tasks: submit rate, {clients} clients, cluster (a + b)",
            f"{cluster[0]:,.0f} acks/s, {cluster[1]:,.0f} jobs done/s",
            f"single host: {single[0]:,.0f} acks/s, {single[1]:,.0f} jobs done/s",
            ratio(cluster[0], single[0]),
        ),
    ]


def _tasks(nc: NatsCluster, tmp: Path, replicas: int, args: argparse.Namespace) -> list[Row]:
    common = {"soft_workers": 1, "hard_workers": 1}
    table = {"nats": nc.urls, "replicas": replicas}
    single = LocalServer(local_settings(tmp / "single", **common))
    a = LocalServer(local_settings(tmp / "a", cluster={**table, "name": "a"}, **common))
    b = LocalServer(local_settings(tmp / "b", cluster={**table, "name": "b"}, **common))
    with single, a, b:
        urls = {"single": single.url, "a": a.url, "b": b.url}
        return _task_rows(urls, args.trips, args.jobs, args.clients)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="skns-ctl bench cluster", description=__doc__)
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases of {', '.join(PHASES)}"
    )
    parser.add_argument("--messages", type=int, default=30000, help="JetStream publishes a row")
    parser.add_argument("--window", type=int, default=1000, help="publishes in flight")
    parser.add_argument("--kv-rounds", type=int, default=50, help="updates of each of 64 keys")
    parser.add_argument("--trips", type=int, default=200, help="sequential task round trips")
    parser.add_argument("--jobs", type=int, default=4000, help="jobs of the submit-rate phase")
    parser.add_argument("--clients", type=int, default=8, help="connections of that phase")
    parser.add_argument("--replicas", type=int, default=3, choices=(1, 3))
    parser.add_argument("--events", type=int, default=20000, help="events of the CPU phase")
    parser.add_argument("--kills", type=int, default=5, help="hosts killed -9, one by one")
    parser.add_argument("--partitions", type=int, default=64, help="executor partitions")
    parser.add_argument("--lease-ttl", type=float, default=3.0, help="executor lease life, s")
    parser.add_argument(
        "--keep", action="store_true", help="keep the hosts' directories (logs) after the run"
    )
    args = parser.parse_args(argv)
    phases = [p for p in args.only.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown phase {', '.join(sorted(unknown))} (of {', '.join(PHASES)})")
    if find_server() is None:
        print("nats-server is not installed (apt-get install nats-server)", file=sys.stderr)
        return 2
    rows: list[Row] = []
    prefix = "skns-bench-cluster-"
    workdir: contextlib.AbstractContextManager[str] = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix))
        if args.keep
        else tempfile.TemporaryDirectory(prefix=prefix)
    )
    with workdir as tmp, NatsCluster(3) as nc:
        if args.keep:
            progress(f"the hosts' directories (config, service.log, state) stay in {tmp}")
        progress(
            f"cluster bench: 3 NATS nodes on loopback; the {psutil.cpu_count()} cores of this "
            "machine are shared by the nodes, the hosts and the client"
        )
        if "jetstream" in phases:
            rows += jetstream_rows(nc, args.messages, args.window, args.kv_rounds)
        if "tasks" in phases:
            rows += _tasks(nc, Path(tmp), args.replicas, args)
        if "executor" in phases:
            plan = execbench.Settings(
                args.events, args.kills, args.partitions, args.replicas, args.lease_ttl
            )
            rows += execbench.rows(nc, Path(tmp), plan)
    print(
        f"cluster bench: 3 NATS nodes, hosts a and b, one Python client, all on this "
        f"machine's {psutil.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}): "
        "two hosts cannot compute faster than one here\n"
    )
    print(table(["measure", "cluster", "baseline (same run)", "ratio"], [astuple(r) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
