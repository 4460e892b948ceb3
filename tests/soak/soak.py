"""The soak test (``make soak``): every subsystem under load while children are killed.

Runs the real service (``python -m skns``) with metrics, the relay (against its simulator),
the executor, the messenger (on SQLite) and tasks, all on free loopback ports in a temporary
directory, and loads each from loopback clients. Meanwhile it kill -9s random children, and
SIGSTOPs others for a while (then SIGCONTs them: a stop past ``heartbeat_timeout`` lets the
supervisor kill the child, as it should), and asks for status every 100 ms (the control
socket's answer, rendered as ``skns-ctl status`` prints it).

It passes when the supervisor never exits, every status request is answered, no child dies
that the soak did not kill or stop, and everything accepted is accounted for:

- metrics: the base lines count every datagram sent, less the kernel's drops (status) and at
  most one batch per worker killed (what it had received but not yet published);
- messenger: every message answered 200 is in the database with the seq of its answer;
- executor: every acked event ran (at least once, each account in order); a run never acked
  is allowed only for events whose frame lost its answer to a kill;
- tasks: every task id given out got its result, unless the tasks server was killed meanwhile;
- relay: the sink received ids strictly increasing (ids held by a killed relay may be lost).

    python tests/soak/soak.py --duration 180     (make soak SOAK_ARGS='--duration 60')
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from skns import control
from skns.ctl import render_status
from skns.errors import ControlError
from skns.executor.checker import verify
from skns.executor.handlers import read_records
from skns.ports import free_port
from skns.relay.sim import Simulator, Source, SourcePlan

WINDOW = 1.0
HEARTBEAT = 3.0
START_PERIOD = 2.0
BATCH = 256  # [metrics] batch: a killed worker loses at most what it took and did not publish
HUNG = re.compile(r"\(pid (\d+)\) missed its heartbeat")


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# ---- the service -----------------------------------------------------------------------------


def write_config(root: Path, ports: dict[str, int], relay_port: int) -> Path:
    state = root / "state"
    text = f"""
[service]
state_dir = "{state}"
control_socket = "{root}/run/control.sock"
heartbeat_timeout = {HEARTBEAT}
start_period = {START_PERIOD}
restart_backoff = 0.1

[metrics]
listen = "127.0.0.1:{ports["metrics"]}"
workers = 2
window = {WINDOW}
intervals = [{WINDOW}, {5 * WINDOW}]
output = "{root}/metrics.jsonl"
batch = {BATCH}

[relay]
enabled = true
source = "ws://127.0.0.1:{relay_port}/raw-messages"
sink = "ws://127.0.0.1:{relay_port}/ordered-messages/{{name}}"
first_id = 0
gap_timeout_ms = 2000
reconnect_backoff_ms = 50
reconnect_backoff_max_ms = 500

[executor]
listen = "127.0.0.1:{ports["executor"]}"
shards = 2
handler = "skns.executor.handlers:record"
duration = 0.01

[messenger]
listen = ["127.0.0.1:{ports["messenger0"]}", "127.0.0.1:{ports["messenger1"]}"]

[tasks]
listen = "127.0.0.1:{ports["tasks"]}"
soft_workers = 1
hard_workers = 1
"""
    path = root / "config.toml"
    path.write_text(text)
    return path


@dataclasses.dataclass
class Chaos:
    """What the soak did to the children, and what it saw happen to them."""

    killed: dict[int, str] = dataclasses.field(default_factory=dict)  # pid -> child name
    stopped: dict[int, str] = dataclasses.field(default_factory=dict)
    stops: int = 0  # SIGSTOPs sent (a child may be stopped more than once)
    deaths: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)  # name, pid, why
    polls: int = 0
    poll_failures: list[str] = dataclasses.field(default_factory=list)
    poll_max_ms: float = 0.0
    last: dict[str, Any] = dataclasses.field(default_factory=dict)  # the latest status
    kills_by_subsystem: dict[str, float] = dataclasses.field(default_factory=dict)  # last kill

    def explain(self, name: str, pid: int) -> str:
        if pid in self.killed:
            return "kill -9"
        if pid in self.stopped:
            return "stopped, then killed by the supervisor"
        return "UNEXPLAINED"


class Watcher(threading.Thread):
    """Polls status every 100 ms; notices every child pid that goes away, and why."""

    def __init__(self, sock: Path, chaos: Chaos, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.sock, self.chaos, self.stop = sock, chaos, stop
        self.pids: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status = control.request(self.sock, "status", timeout=5.0)
                render_status(status)  # what skns-ctl status prints, built from the answer
            except ControlError as exc:
                self.chaos.poll_failures.append(f"{time.strftime('%H:%M:%S')} {exc}")
            else:
                self.chaos.polls += 1
                self.chaos.poll_max_ms = max(self.chaos.poll_max_ms, (time.monotonic() - t0) * 1e3)
                self.chaos.last = status
                for c in status["children"]:
                    old = self.pids.get(c["name"])
                    if old and c["pid"] != old:
                        why = self.chaos.explain(c["name"], old)
                        self.chaos.deaths.append((c["name"], old, why))
                    self.pids[c["name"]] = c["pid"] or 0
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


class Monkey(threading.Thread):
    """Every ``every`` seconds: kill -9 a random child, or SIGSTOP one for up to 1.5
    heartbeat timeouts and SIGCONT it."""

    def __init__(self, chaos: Chaos, stop: threading.Event, every: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.chaos, self.stop, self.every = chaos, stop, every
        self.rng = random.Random(seed)

    def victims(self) -> list[dict[str, Any]]:
        # A child stopped before and let go on is a victim again: leaving it out, the soak
        # ran out of victims once each live child had been stopped once (a 180 s soak
        # did nothing after its first 75 s with some seeds).
        status = self.chaos.last
        return [
            c
            for c in status.get("children", [])
            if c["up"] and (c["uptime"] or 0) > START_PERIOD + 1
        ]

    def run(self) -> None:
        while not self.stop.wait(self.every * self.rng.uniform(0.5, 1.5)):
            victims = self.victims()
            if not victims:
                continue
            c = self.rng.choice(victims)
            pid = c["pid"]
            self.chaos.kills_by_subsystem[c["subsystem"]] = time.monotonic()
            if self.rng.random() < 0.65:
                self.chaos.killed[pid] = c["name"]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                log(f"kill -9 {c['name']} (pid {pid})")
            else:
                pause = self.rng.uniform(0.3, 1.5 * HEARTBEAT)
                self.chaos.stopped[pid] = c["name"]
                self.chaos.stops += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                log(f"SIGSTOP {c['name']} (pid {pid}) for {pause:.1f}s")
                self.stop.wait(pause)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                self.chaos.kills_by_subsystem[c["subsystem"]] = time.monotonic()


# ---- the load --------------------------------------------------------------------------------


class Metrics:
    def __init__(self, port: int, rate: int) -> None:
        self.port, self.rate = port, rate
        self.sent = 0
        self.last_sent = 0.0

    async def run(self, until: float) -> None:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setblocking(False)
        per_tick = max(1, self.rate // 100)
        while time.monotonic() < until:
            for _ in range(per_tick):
                i = self.sent
                data = b'{"A1":1,"A2":%d,"A3":%d}' % (i, -i)
                try:
                    tx.sendto(data, ("127.0.0.1", self.port))
                except BlockingIOError:
                    break
                self.sent += 1
            self.last_sent = time.time()
            await asyncio.sleep(0.01)
        tx.close()

    def check(self, output: Path, drops: int, workers_killed: int) -> tuple[bool, str]:
        data = output.read_bytes()
        lines = [json.loads(x) for x in data.decode().splitlines()]
        torn = not data.endswith(b"\n")
        keys = [(x["count_type"], x["timestamp"]) for x in lines]
        repeated = len(keys) - len(set(keys))
        base = [x for x in lines if x["count_type"] == f"{WINDOW:g}s"]
        stamps = [x["timestamp"] for x in base]
        gaps = sum(1 for a, b in itertools.pairwise(stamps) if abs(b - a - WINDOW) > 1e-6)
        counted = sum(x["count"] for x in base)
        allowed = drops + workers_killed * BATCH
        ok = not torn and not repeated and not gaps and self.sent - allowed <= counted <= self.sent
        return ok, (
            f"{self.sent} sent, {counted} in {len(base)} windows, {drops} kernel drops, "
            f"{self.sent - counted} lost (allowed {allowed}: drops + {workers_killed} worker "
            f"kills x {BATCH}); {repeated} repeated, {gaps} gaps, torn: {torn}"
        )


class Messenger:
    def __init__(self, urls: list[str], clients: int) -> None:
        self.urls, self.clients = urls, clients
        self.ok: dict[int, tuple[str, str]] = {}  # seq -> (sender, text)
        self.errors = 0
        self.sent = 0

    async def run(self, until: float) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._client(http, i, until) for i in range(self.clients)))

    async def _client(self, http: aiohttp.ClientSession, i: int, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            sender, text = f"user{i % 10}", f"c{i} m{n}"
            n += 1
            self.sent += 1
            try:
                async with http.post(
                    random.choice(self.urls) + "/messages", json={"sender": sender, "text": text}
                ) as answer:
                    if answer.status == 200:
                        mine = (await answer.json())["messages"][-1]
                        self.ok[mine["seq"]] = (mine["sender"], mine["text"])
                    else:
                        self.errors += 1
            except (aiohttp.ClientError, TimeoutError):
                self.errors += 1
                await asyncio.sleep(0.05)

    def check(self, db: Path) -> tuple[bool, str]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        stored = {
            seq: (s, t)
            for seq, s, t in con.execute("SELECT seq, sender, text FROM messenger_messages")
        }
        con.close()
        missing = sum(1 for seq, m in self.ok.items() if stored.get(seq) != m)
        return missing == 0, (
            f"{self.sent} posted, {len(self.ok)} answered 200, {len(stored)} stored, "
            f"{missing} answered-200 missing or different, {self.errors} errors (no answer)"
        )


class Executor:
    def __init__(self, url: str, accounts: int) -> None:
        self.url, self.accounts = url, accounts
        self.acked: dict[int, int] = {}
        self.unanswered = 0  # events in frames whose answer a kill took
        self.sent = 0

    async def run(self, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            try:
                async with connect(self.url, open_timeout=10, max_size=None) as ws:
                    while time.monotonic() < until:
                        frame = [
                            {"account_id": random.randrange(self.accounts), "payload": {"n": n + j}}
                            for j in range(20)
                        ]
                        n += len(frame)
                        self.sent += len(frame)
                        try:
                            await ws.send(json.dumps(frame))
                            answer = json.loads(await asyncio.wait_for(ws.recv(), 15))
                        except BaseException:
                            # It may have been taken (and run) before the kill: no ack.
                            self.unanswered += len(frame)
                            raise
                        if "ack" in answer:
                            self.acked.update(
                                zip(answer["ack"], (e["account_id"] for e in frame), strict=True)
                            )
                        else:
                            self.unanswered += len(frame)
                        await asyncio.sleep(0.02)
            except Exception:  # the router was killed (or stopped past a timeout): reconnect
                await asyncio.sleep(0.2)

    def check(self, state: Path, wait: float) -> tuple[bool, str]:
        deadline = time.monotonic() + wait
        while True:
            runs = read_records(state / "executor")
            ran = {r[0] for r in runs}
            if set(self.acked) <= ran or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        verdict = verify(self.acked, runs, exactly_once=False)
        bad = verdict.missing + verdict.wrong_account + verdict.out_of_order
        ok = bad == 0 and verdict.unknown <= self.unanswered
        return ok, (
            f"{self.sent} sent, {len(self.acked)} acked, {verdict.runs} runs, "
            f"{verdict.missing} acked never run, {verdict.out_of_order} out of order, "
            f"{verdict.duplicates} re-runs after a crash, {verdict.unknown} runs never acked "
            f"(allowed {self.unanswered}: answers lost to a kill)"
        )


class Tasks:
    def __init__(self, url: str, clients: int, chaos: Chaos) -> None:
        self.url, self.clients, self.chaos = url, clients, chaos
        self.submitted = 0
        self.done = 0
        self.lost_to_kill = 0
        self.lost = 0

    async def run(self, until: float) -> None:
        await asyncio.gather(*(self._client(until) for _ in range(self.clients)))

    async def _client(self, until: float) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            waiting: set[str] = set()
            try:
                async with connect(self.url, open_timeout=10, max_size=None) as ws:
                    while time.monotonic() < until:
                        await ws.send(
                            json.dumps({"type": "factorial", "number": random.randint(10, 400)})
                        )
                        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        task = answer["task_id"]
                        self.submitted += 1
                        waiting.add(task)
                        result = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if result.get("type") == "success" and result["task_id"] == task:
                            self.done += 1
                            waiting.discard(task)
                        started = time.monotonic()
            except Exception:
                killed = self.chaos.kills_by_subsystem.get("tasks", 0) >= started - 1
                if killed:
                    self.lost_to_kill += len(waiting)
                else:
                    self.lost += len(waiting)
                await asyncio.sleep(0.2)

    def check(self) -> tuple[bool, str]:
        return self.lost == 0, (
            f"{self.submitted} submitted, {self.done} results, {self.lost_to_kill} lost with a "
            f"killed server, {self.lost} lost otherwise"
        )


# ---- the run ---------------------------------------------------------------------------------


async def load(args: argparse.Namespace, root: Path, chaos: Chaos) -> int:
    ports = {k: free_port() for k in ("metrics", "executor", "messenger0", "messenger1", "tasks")}
    duration = args.duration
    plan = SourcePlan(count=int(args.relay_rate * (duration + 60)), rate=args.relay_rate, window=10)
    source = Source(plan.frames(), replay=0)
    async with Simulator(source) as sim:
        config = write_config(root, ports, sim.port)
        log(f"config {config}; service log {root / 'service.log'}")
        with (root / "service.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "skns", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            return await _soak(args, root, chaos, ports, sim, proc)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def _soak(args, root, chaos, ports, sim, proc) -> int:
    sock = root / "run/control.sock"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(ControlError):
            if control.request(sock, "status")["service"]["state"] == "running":
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            print((root / "service.log").read_text()[-3000:])
            raise SystemExit("the service did not start")
        await asyncio.sleep(0.1)
    log("service running: load and chaos start")
    stop, watched = threading.Event(), threading.Event()
    watcher = Watcher(sock, chaos, watched)  # on until the service is told to stop
    monkey = Monkey(chaos, stop, args.chaos_every, args.seed)
    watcher.start()
    await asyncio.sleep(START_PERIOD + 1.5)
    monkey.start()
    until = time.monotonic() + args.duration
    metrics = Metrics(ports["metrics"], args.udp_rate)
    messenger = Messenger([f"http://127.0.0.1:{ports[f'messenger{i}']}" for i in (0, 1)], 8)
    executor = Executor(f"ws://127.0.0.1:{ports['executor']}/", 200)
    tasks = Tasks(f"ws://127.0.0.1:{ports['tasks']}/", 4, chaos)

    async def progress() -> None:
        while time.monotonic() < until:
            await asyncio.sleep(10)
            sink = sim.sinks.get("skns")
            log(
                f"{until - time.monotonic():.0f}s left: {metrics.sent} datagrams, "
                f"{len(messenger.ok)} messages, {len(executor.acked)} events acked, "
                f"{tasks.done} tasks, {len(sink.seen) if sink else 0} relayed; "
                f"{len(chaos.killed)} kill -9, {chaos.stops} SIGSTOP, "
                f"{chaos.polls} status polls"
            )

    await asyncio.gather(
        metrics.run(until), messenger.run(until), executor.run(until), tasks.run(until), progress()
    )
    monkey_stopped = time.monotonic()
    stop.set()
    monkey.join()
    log("load and chaos over: waiting for the last windows and events")
    # Every worker running again, then the window holding the last datagram closed and written.
    settle = time.monotonic() + 30
    while time.monotonic() < settle and not all(c["up"] for c in chaos.last.get("children", [])):
        await asyncio.sleep(0.2)  # the watcher keeps chaos.last current
    await asyncio.sleep(max(0.0, metrics.last_sent + 2 * WINDOW + 1.0 - time.time()))
    status = control.request(sock, "status")
    drops = status["subsystems"]["metrics"]["kernel_drops"]
    alive = proc.poll() is None
    state = root / "state"
    results = [
        ("metrics", metrics.check(root / "metrics.jsonl", drops, _kills(chaos, "udp-worker"))),
        ("executor", executor.check(state, wait=60)),
        ("messenger", messenger.check(state / "messenger.sqlite3")),
        ("tasks", tasks.check()),
        ("relay", _relay(sim)),
    ]
    watched.set()
    watcher.join()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 60)
    # The supervisor may kill a child for a missed heartbeat only if the soak stopped it.
    hung = {int(pid) for pid in HUNG.findall((root / "service.log").read_text())}
    healthy_killed = hung - set(chaos.stopped)
    unexplained = [d for d in chaos.deaths if d[2] == "UNEXPLAINED"]
    by_reason: dict[str, int] = {}
    for _, _, why in chaos.deaths:
        by_reason[why] = by_reason.get(why, 0) + 1
    rows = [(name, "ok" if ok else "FAIL", text) for name, (ok, text) in results]
    rows.append(
        (
            "supervisor",
            "ok" if alive and code == 0 else "FAIL",
            f"alive through the soak: {alive}; exit status at stop {code}",
        )
    )
    rows.append(
        (
            "children",
            "ok" if not unexplained and not healthy_killed else "FAIL",
            f"{len(chaos.killed)} kill -9, {chaos.stops} SIGSTOP ({len(hung)} then "
            f"killed by the supervisor for a missed heartbeat, {len(healthy_killed)} killed "
            f"that the soak did not stop); deaths seen: {by_reason or 'none'}",
        )
    )
    rows.append(
        (
            "status",
            "ok" if not chaos.poll_failures else "FAIL",
            f"{chaos.polls} polls every 100 ms, {len(chaos.poll_failures)} unanswered, "
            f"slowest {chaos.poll_max_ms:.0f} ms",
        )
    )
    print()
    width = max(len(r[0]) for r in rows)
    print(f"{'PART'.ljust(width)}  RESULT  DETAIL")
    for name, verdict, text in rows:
        print(f"{name.ljust(width)}  {verdict.ljust(6)}  {text}")
    for name, pid, _ in unexplained:
        print(f"  unexplained death: {name} pid {pid}")
    for failure in chaos.poll_failures[:5]:
        print(f"  status failure: {failure}")
    print(f"\nsoak of {args.duration:.0f}s ({time.monotonic() - monkey_stopped:.0f}s to settle)")
    passed = all(r[1] == "ok" for r in rows)
    print("PASSED" if passed else "FAILED")
    return 0 if passed else 1


def _kills(chaos: Chaos, role: str) -> int:
    """Children of ``role`` that died (by our hand or by the supervisor after our stop)."""
    return sum(1 for name, _, _ in chaos.deaths if name.startswith(role + " "))


def _relay(sim: Simulator) -> tuple[bool, str]:
    sink = sim.sinks.get("skns")
    if sink is None:
        return False, "the relay never connected to the sink"
    r = sink.report()
    sent = len(sim.source.first_sent)
    return r["in_order"], (
        f"{sent} ids sent by the source, {r['distinct']} delivered in "
        f"{r['connections']} sink connections, in order: {r['in_order']} "
        f"({r['out_of_order']} out of order), {r['duplicates']} duplicates, "
        f"{sent - r['distinct']} not delivered (in flight at the end, held by a killed relay, "
        "or skipped)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load and chaos")
    parser.add_argument("--chaos-every", type=float, default=3.0, help="seconds between acts")
    parser.add_argument("--udp-rate", type=int, default=3000, help="datagrams per second")
    parser.add_argument("--relay-rate", type=float, default=300.0, help="source messages/s")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="skns-soak."))
    log(f"soak for {args.duration:.0f}s, seed {args.seed}, in {root}")
    try:
        return asyncio.run(load(args, root, Chaos()))
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    sys.exit(main())
