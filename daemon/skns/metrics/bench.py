"""``skns-ctl bench metrics``: what a datagram costs, and the highest rate with no loss.

1. CPU time per accepted datagram of the whole service (supervisor and one
   worker, user and system) at a steady rate, beside a baseline measured in the
   same run: one process doing ``recv`` + ``json.loads`` + the same aggregation.
   Several runs; the one with the median ratio is shown, with the ranges, and
   how many datagrams the worker took per wakeup.
2. One sender over every worker: one generator socket, every worker; the
   per-worker split and its max/min share, beside the kernel's default (a hash
   of the sender's address) measured in the same run on a plain socket group.
   Twice: one datagram per message (the group picks a worker per datagram), and
   with UDP segmentation offload (``--gso`` datagrams per message), which costs
   the generator far less CPU but lets the group pick once per message.
3. The zero-loss rate: the highest sustained send rate with zero kernel drops
   and zero missing datagrams, with 1 and with 2 workers.

The generator is a separate process sending pre-built messages with
sendmmsg(2) from connected sockets (16, or 1 for the one-sender run). On
loopback the sender's system call also runs the receiving half of the network
stack (up to the datagram's enqueue on the worker's socket), so it costs the
generator several µs per datagram; on a 2-core machine it competes with the
workers for CPU: the table says what rate it reached. On a shared machine the
absolute figures wander; the ratios against a baseline from the same run are
the steadier signal.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from ..control import request
from ..errors import ControlError
from ..settings import HostPort
from .recvmmsg import MAX_BATCH, BatchReceiver, IOVec, MMsgHdr, libc
from .settings import MetricsSettings
from .sockets import SO_RCVBUFFORCE, bind_all

_sendmmsg = libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int

BATCH = 64


def payloads(n: int = 1024, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [
        json.dumps(
            {
                "A1": rng.randint(-(10**9), 10**9),
                "A2": rng.randint(-1000, 1000),
                "A3": rng.randint(-1000, 1000),
            }
        ).encode()
        for _ in range(n)
    ]


# UDP generic segmentation offload (linux/udp.h): one send of k * size bytes leaves the
# socket as k datagrams of ``size`` bytes each, the kernel cutting them.
UDP_SEGMENT = 103
SOL_UDP = getattr(socket, "SOL_UDP", 17)
GSO_MAX = 64


def padded(data: list[bytes]) -> list[bytes]:
    """The datagrams padded with trailing spaces (still the same JSON) to one length, as
    segmentation offload cuts equal pieces."""
    width = max(map(len, data))
    return [d.ljust(width) for d in data]


class Sender:
    """Sends batches of prepared messages on one connected socket with sendmmsg.

    With ``gso`` > 1 each message is ``gso`` datagrams joined, which the socket's
    UDP_SEGMENT option cuts apart again: the same datagrams for a fraction of the
    sender's CPU (its share of the loopback path is paid once per message, not per
    datagram), but a socket group then picks one worker per message, not per datagram."""

    def __init__(self, sock: socket.socket, data: list[bytes], gso: int = 1) -> None:
        self.sock = sock
        self.gso = gso
        if gso > 1:
            data = padded(data)
            sock.setsockopt(SOL_UDP, UDP_SEGMENT, len(data[0]))
            data = [b"".join(data[i : i + gso]) for i in range(0, len(data) - gso + 1, gso)]
        self._keep = [ctypes.create_string_buffer(d, len(d)) for d in data]
        self._hdrs = (MMsgHdr * len(data))()
        self._iov = (IOVec * len(data))()
        for i, buf in enumerate(self._keep):
            self._iov[i].iov_base = ctypes.addressof(buf)
            self._iov[i].iov_len = len(data[i])
            self._hdrs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._hdrs[i].msg_hdr.msg_iovlen = 1
        self._base = ctypes.addressof(self._hdrs)
        self._size = ctypes.sizeof(MMsgHdr)
        self.count = len(data)

    def send(self, start: int, n: int) -> int:
        """Send up to n messages beginning at prepared message ``start``; return how many
        datagrams went."""
        n = min(n, self.count - start)
        sent = _sendmmsg(self.sock.fileno(), self._base + start * self._size, n, 0)
        return max(sent, 0) * self.gso


def generate(
    port: int, rate: float, seconds: float, sockets: int, result: Any, gso: int = 1
) -> None:
    """Child process: send at ``rate`` datagrams/s for ``seconds``; report (sent, cpu, elapsed).

    ``gso``: datagrams per message (see :class:`Sender`); ``sent`` counts datagrams."""
    data = payloads(max(1024, 2 * BATCH * gso))
    senders = []
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        # Never block for good when nothing drains the queue (a worker stuck or gone).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
        s.connect(("127.0.0.1", port))
        senders.append(Sender(s, data, gso))
    messages = senders[0].count
    cpu0 = time.process_time()
    start = time.monotonic()
    sent = 0
    turn = 0
    total = int(rate * seconds) // gso * gso
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) // gso * gso)
        if due <= sent:
            time.sleep(0.0005)
            continue
        while sent < due:
            first = (sent // gso) % (messages - BATCH)
            n = senders[turn % sockets].send(first, min(BATCH, (due - sent) // gso))
            turn += 1
            sent += n
            if not n:
                break
        if time.monotonic() - start > seconds * 1.5:  # cannot keep up: stop, report what went
            break
    result.put((sent, time.process_time() - cpu0, time.monotonic() - start))


def run_generator(
    port: int, rate: float, seconds: float, sockets: int, gso: int = 1
) -> tuple[int, float, float]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=generate, args=(port, rate, seconds, sockets, q, gso))
    p.start()
    try:
        return q.get(timeout=seconds * 2 + 30)
    finally:
        p.join(10)


# -- the service under test --------------------------------------------------------


class Service:
    def __init__(self, workers: int, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.config = root / "config.toml"
        self.socket = root / "control.sock"
        self.config.write_text(
            f'[service]\nstate_dir = "{root}/state"\ncontrol_socket = "{self.socket}"\n'
            'log_level = "warning"\n'
            f'[metrics]\nlisten = "127.0.0.1:0"\nworkers = {workers}\nwindow = 1\nintervals = [1]\n'
            f'output = "{root}/metrics.jsonl"\n'
            "[relay]\nenabled = false\n[executor]\nenabled = false\n"
            "[messenger]\nenabled = false\n[tasks]\nenabled = false\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skns", "--config", str(self.config)],
            stderr=(root / "log").open("wb"),
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(ControlError):
                status = request(self.socket, "status")
                if status["service"]["state"] == "running":
                    break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"service did not start: {(root / 'log').read_text()}")
            time.sleep(0.05)
        self.port = int(status["subsystems"]["metrics"]["listen"].rpartition(":")[2])
        self.workers = [psutil.Process(c["pid"]) for c in status["children"]]
        self.tree = [psutil.Process(self.proc.pid), *self.workers]

    def metrics(self) -> dict[str, Any]:
        return request(self.socket, "status")["subsystems"]["metrics"]

    def worker_cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the workers so far."""
        times = [p.cpu_times() for p in self.workers]
        return sum(t.user for t in times), sum(t.system for t in times)

    def tree_cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far of the whole service: supervisor and workers."""
        times = [p.cpu_times() for p in self.tree]
        return sum(t.user for t in times), sum(t.system for t in times)

    def wakeups(self) -> int:
        """The workers' voluntary context switches so far: each is a sleep (the coalescing
        wait or an idle poll) that ended in a wakeup."""
        return sum(p.num_ctx_switches().voluntary for p in self.workers)

    def settle(self, expected: int, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the workers have taken everything queued (accepted stops moving)."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            m = self.metrics()
            if m["accepted"] >= expected or m["accepted"] == last:
                return m
            last = m["accepted"]
            time.sleep(0.3)
        return self.metrics()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


# -- the baseline ----------------------------------------------------------------------


def baseline(port_q: Any, result: Any, window: float = 1.0) -> None:
    """Child process: the straightforward receiver, one datagram per recv, json.loads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.bind(("127.0.0.1", 0))
    port_q.put(s.getsockname()[1])
    s.settimeout(1.0)
    windows: dict[int, list[int]] = {}
    accepted = 0
    cpu0 = time.process_time()
    while True:
        try:
            data = s.recv(65535)
        except TimeoutError:
            if accepted:  # the sender is done
                break
            continue
        try:
            obj = json.loads(data)
            a1, a2, a3 = obj["A1"], obj["A2"], obj["A3"]
        except (ValueError, KeyError, TypeError):
            continue
        if not all(type(v) is int and -(2**63) <= v < 2**63 for v in (a1, a2, a3)):
            continue
        w = math.floor(time.time() / window)
        agg = windows.get(w)
        if agg is None:
            windows[w] = [1, a1, a2, a3]
        else:
            agg[0] += 1
            agg[1] += a1
            if a2 > agg[2]:
                agg[2] = a2
            if a3 < agg[3]:
                agg[3] = a3
        accepted += 1
    # process_time counts CPU only: the final 1 s of waiting costs nothing
    result.put((accepted, time.process_time() - cpu0))


def receive_only(port_q: Any, result: Any) -> None:
    """Child process: the floor under the worker. The worker's receive with nothing
    after it: recvmmsg into the same slots, paced the same way (a short batch waits
    ``coalesce_ms``), no parsing. Reports (datagrams, user, system) CPU seconds."""
    coalesce = MetricsSettings().coalesce_ms / 1000
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(PermissionError):
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    rx = BatchReceiver(s, MAX_BATCH, 2048)
    port_q.put(s.getsockname()[1])
    got = 0
    last = time.monotonic()
    cpu0 = os.times()
    while got == 0 or time.monotonic() - last < 1.0:  # until the sender is done
        n = rx.recv()
        if n:
            rx.reset(n)
            got += n
            last = time.monotonic()
        if n < rx.batch:
            time.sleep(coalesce)
    cpu1 = os.times()
    result.put((got, cpu1.user - cpu0.user, cpu1.system - cpu0.system))


def run_receiver(
    target: Any, rate: float, seconds: float, sockets: int, gso: int
) -> tuple[int, tuple[Any, ...]]:
    """Run a receiver child process (``target(port_q, result)``) fed by the generator:
    (datagrams sent, what the receiver reported)."""
    ctx = mp.get_context("fork")
    port_q, result = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=target, args=(port_q, result))
    p.start()
    try:
        sent, _, _ = run_generator(port_q.get(timeout=10), rate, seconds, sockets, gso)
        return sent, result.get(timeout=seconds + 30)
    finally:
        p.join(10)


# -- measurements ----------------------------------------------------------------------


def cpu_per_datagram(
    rate: float, seconds: float, sockets: int, tmp: Path, run: int = 0, gso: int = 1
) -> dict[str, Any]:
    """One run: the service with 1 worker, then the baseline, each fed ``rate`` for
    ``seconds`` (``gso`` datagrams per message). CPU is the service's whole process tree
    (supervisor and worker)."""
    svc = Service(1, tmp / f"cpu-{run}")
    try:
        run_generator(svc.port, rate, 1.0, sockets, gso)  # warm-up: caches, buffers, allocator
        svc.settle(svc.metrics()["accepted"] + int(rate))
        m0 = svc.metrics()
        (user0, sys0), wake0 = svc.tree_cpu(), svc.wakeups()
        sent, gen_cpu, elapsed = run_generator(svc.port, rate, seconds, sockets, gso)
        m1 = svc.settle(m0["accepted"] + sent)
        (user1, sys1), wake1 = svc.tree_cpu(), svc.wakeups()
        skns_n = max(1, m1["accepted"] - m0["accepted"])
    finally:
        svc.stop()
    base_sent, (base_n, base_cpu) = run_receiver(baseline, rate, seconds, sockets, gso)
    _, (floor_n, floor_user, floor_sys) = run_receiver(receive_only, rate, seconds, sockets, gso)
    skns_us = (user1 - user0 + sys1 - sys0) / skns_n * 1e6
    base_us = base_cpu / max(1, base_n) * 1e6
    return {
        "skns_us": skns_us,
        "skns_user_us": (user1 - user0) / skns_n * 1e6,
        "skns_sys_us": (sys1 - sys0) / skns_n * 1e6,
        "skns_n": skns_n,
        "sent": sent,
        "achieved": sent / elapsed if elapsed else 0.0,
        "generator_cpu_pct": gen_cpu / elapsed * 100 if elapsed else 0.0,
        "missing": sent - skns_n,
        "drops": m1["kernel_drops"] - m0["kernel_drops"],
        "wakeups_per_s": (wake1 - wake0) / elapsed if elapsed else 0.0,
        "per_wakeup": skns_n / max(1, wake1 - wake0),
        "base_us": base_us,
        "base_n": base_n,
        "base_sent": base_sent,
        "ratio": base_us / skns_us if skns_us else 0.0,
        "floor_user_us": floor_user / max(1, floor_n) * 1e6,
        "floor_sys_us": floor_sys / max(1, floor_n) * 1e6,
    }


def cpu_runs(
    rate: float, seconds: float, sockets: int, tmp: Path, runs: int, gso: int = 1
) -> dict[str, Any]:
    """``runs`` runs of :func:`cpu_per_datagram`; the one with the median ratio stands for
    them (a pair from one run: the load of a shared machine moves both), with the ranges."""
    results = []
    for run in range(runs):
        r = cpu_per_datagram(rate, seconds, sockets, tmp, run, gso)
        print(
            f"  run {run + 1}: skns {r['skns_us']:.2f} µs ({r['skns_user_us']:.2f} + "
            f"{r['skns_sys_us']:.2f}), baseline {r['base_us']:.2f} µs, {r['ratio']:.1f}x, "
            f"receive alone {r['floor_user_us']:.2f} + {r['floor_sys_us']:.2f} µs; "
            f"sent at {r['achieved'] / 1000:.0f}k/s, {r['per_wakeup']:.0f} datagrams per wakeup",
            flush=True,
        )
        results.append(r)
    results.sort(key=lambda r: r["ratio"])
    median = results[len(results) // 2]
    return {
        **median,
        "runs": runs,
        "gso": gso,
        "skns_range": (min(r["skns_us"] for r in results), max(r["skns_us"] for r in results)),
        "ratio_range": (results[0]["ratio"], results[-1]["ratio"]),
        "missing": sum(r["missing"] for r in results),
        "drops": sum(r["drops"] for r in results),
    }


def one_sender(
    workers: int, rate: float, seconds: float, tmp: Path, gso: int = 1
) -> dict[str, Any]:
    """One generator socket at ``rate`` against ``workers`` workers: how it is split.
    ``gso`` > 1: the socket sends ``gso`` datagrams per message (see :class:`Sender`)."""
    svc = Service(workers, tmp / f"one-sender-{gso}")
    try:
        m0 = svc.metrics()
        cpu0 = sum(svc.tree_cpu())
        sent, gen_cpu, elapsed = run_generator(svc.port, rate, seconds, 1, gso)
        m1 = svc.settle(m0["accepted"] + sent)
        cpu = sum(svc.tree_cpu()) - cpu0
    finally:
        svc.stop()
    split = [
        b - a for a, b in zip(m0["accepted_per_worker"], m1["accepted_per_worker"], strict=True)
    ]
    drops = m1["kernel_drops"] - m0["kernel_drops"]
    return {
        "spread": m1["spread"],
        "split": split,
        "share": share(split),
        "sent": sent,
        "achieved": sent / elapsed if elapsed else 0.0,
        "missing": sent - sum(split),
        "drops": drops,
        "gso": gso,
        "service_cpu_pct": cpu / elapsed * 100 if elapsed else 0.0,
        "generator_cpu_pct": gen_cpu / elapsed * 100 if elapsed else 0.0,
        "generator_us": gen_cpu / sent * 1e6 if sent else 0.0,
    }


def hashed_split(workers: int, count: int = 20_000) -> list[int]:
    """The baseline: the kernel's own choice (a hash of the sender), one sender socket
    and a socket group bound like the workers' but without the spreading program."""
    socks = bind_all(HostPort("127.0.0.1", 0), workers, 8 << 20)
    got = [0] * workers
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.connect(socks[0].getsockname())
            for start in range(0, count, 100):  # drained every 100: no buffer overflows
                for _ in range(min(100, count - start)):
                    tx.send(b'{"A1": 1, "A2": 2, "A3": 3}')
                for i, s in enumerate(socks):
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            s.recv(2048)
                            got[i] += 1
    finally:
        for s in socks:
            s.close()
    return got


def share(split: list[int]) -> float:
    """Max/min of a per-worker split: 1.0 is even, infinite when a worker got nothing."""
    return max(split) / min(split) if min(split) else math.inf


def lossless(workers: int, rate: float, seconds: float, sockets: int, tmp: Path) -> dict[str, Any]:
    """One run at ``rate``: did every datagram arrive, with no kernel drop?"""
    svc = Service(workers, tmp / f"loss-{workers}-{int(rate)}")
    try:
        m0 = svc.metrics()
        cpu0 = sum(svc.worker_cpu())
        sent, gen_cpu, elapsed = run_generator(svc.port, rate, seconds, sockets)
        m1 = svc.settle(m0["accepted"] + sent)
        cpu = sum(svc.worker_cpu()) - cpu0
    finally:
        svc.stop()
    received = m1["accepted"] - m0["accepted"]
    drops = m1["kernel_drops"] - m0["kernel_drops"]
    achieved = sent / elapsed if elapsed else 0.0
    return {
        "rate": rate,
        "achieved": achieved,
        "sent": sent,
        "missing": sent - received,
        "drops": drops,
        "ok": sent - received == 0 and drops == 0,
        "generator_limited": achieved < rate * 0.97,
        "worker_cpu_pct": cpu / elapsed * 100 if elapsed else 0.0,
        "generator_cpu_pct": gen_cpu / elapsed * 100 if elapsed else 0.0,
    }


def search(
    workers: int, rates: list[float], probe: float, confirm: float, sockets: int, tmp: Path
) -> dict[str, Any]:
    """Try ``rates`` in order; confirm the highest lossless one with a long run.

    The result's "limit" says what ended the search: "loss" (the next rate lost
    datagrams), "generator" (it could not send faster), or "range" (every rate passed).
    """
    best: dict[str, Any] | None = None
    limit = "range"
    for rate in rates:
        r = lossless(workers, rate, probe, sockets, tmp)
        mark = "ok" if r["ok"] else f"LOSS (missing {r['missing']}, drops {r['drops']})"
        gen = ", generator-limited" if r["generator_limited"] else ""
        print(
            f"  workers={workers} {rate / 1000:>5.0f}k/s for {probe:g}s: "
            f"achieved {r['achieved'] / 1000:.0f}k/s, {mark}{gen}",
            flush=True,
        )
        if not r["ok"]:
            limit = "loss"
            break
        best = r
        if r["generator_limited"]:
            limit = "generator"
            break
    if best is None:
        return {"rate": 0.0, "achieved": 0.0, "ok": False, "limit": limit}
    print(
        f"  workers={workers} confirming {best['rate'] / 1000:.0f}k/s for {confirm:g}s", flush=True
    )
    final = lossless(workers, best["rate"], confirm, sockets, tmp)
    if not final["ok"]:
        print(
            f"  confirmation lost: missing {final['missing']}, drops {final['drops']}", flush=True
        )
    return {**final, "limit": limit}


LIMITS = {
    "loss": "the next rate lost datagrams",
    "generator": "the generator could not send faster",
    "range": "the highest rate tried",
}


PARTS = ("cpu", "spread", "loss")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="skns-ctl bench metrics", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--cpu-rate", type=float, default=200_000, help="send rate for the CPU measurement"
    )
    parser.add_argument("--cpu-seconds", type=float, default=5.0)
    parser.add_argument(
        "--cpu-runs", type=int, default=3, help="CPU runs (skns, then baseline); the median shown"
    )
    parser.add_argument(
        "--cpu-gso",
        type=int,
        default=1,
        help=f"datagrams per generator message in the CPU runs (1..{GSO_MAX}; > 1: UDP GSO, "
        "so the generator, sharing the CPUs, can reach the rate)",
    )
    parser.add_argument(
        "--one-sender-rate", type=float, default=300_000, help="send rate of the one-sender run"
    )
    parser.add_argument("--one-sender-seconds", type=float, default=5.0)
    parser.add_argument(
        "--one-sender-workers",
        type=int,
        default=max(2, os.cpu_count() or 2),
        help="workers for the one-sender run (default: one per CPU, at least 2)",
    )
    parser.add_argument(
        "--gso",
        type=int,
        default=16,
        help=f"datagrams per message in the second one-sender run (UDP GSO, 2..{GSO_MAX}; "
        "0: no such run)",
    )
    parser.add_argument(
        "--rates",
        default="100000,200000,300000,400000,500000,600000,800000",
        help="rates tried in the zero-loss search, ascending",
    )
    parser.add_argument("--probe", type=float, default=4.0, help="seconds per search step")
    parser.add_argument(
        "--confirm", type=float, default=30.0, help="seconds of the final zero-loss run"
    )
    parser.add_argument("--sockets", type=int, default=16, help="generator source sockets")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="what to measure, comma-separated: cpu (CPU per datagram), spread (one "
        "sender over the workers), loss (the zero-loss rates)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs (a smoke test, not a figure)"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - set(PARTS) or not parts:
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    if args.gso and not 2 <= args.gso <= GSO_MAX:
        parser.error(f"--gso: 0 or 2..{GSO_MAX}")
    if not 1 <= args.cpu_gso <= GSO_MAX:
        parser.error(f"--cpu-gso: 1..{GSO_MAX}")
    if args.quick:
        args.cpu_seconds, args.probe, args.confirm, args.rates = 1.0, 1.0, 2.0, "50000,100000"
        args.one_sender_seconds, args.one_sender_rate, args.cpu_runs = 1.0, 50_000, 1
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="skns-bench-") as tmp:
        root = Path(tmp)
        print(
            f"metrics bench: {os.cpu_count()} CPUs; generator: {args.sockets} sockets, sendmmsg",
            flush=True,
        )
        if "cpu" in parts:
            print(
                f"CPU per datagram at {args.cpu_rate / 1000:.0f}k/s for {args.cpu_seconds:g}s,"
                f" {args.cpu_runs} run(s): skns, then the baseline",
                flush=True,
            )
            cpu = cpu_runs(
                args.cpu_rate, args.cpu_seconds, args.sockets, root, args.cpu_runs, args.cpu_gso
            )
            rows.append(cpu_row(cpu, args))
        if "spread" in parts:
            hashed = hashed_split(args.one_sender_workers)
            for gso in (1, args.gso) if args.gso else (1,):
                print(
                    f"one sender socket at {args.one_sender_rate / 1000:.0f}k/s for "
                    f"{args.one_sender_seconds:g}s, {args.one_sender_workers} workers, "
                    f"{gso} datagram(s) per message",
                    flush=True,
                )
                o = one_sender(
                    args.one_sender_workers,
                    args.one_sender_rate,
                    args.one_sender_seconds,
                    root,
                    gso,
                )
                rows.append(spread_row(o, hashed, args))
        if "loss" in parts:
            for n in (1, 2):
                print(f"zero-loss rate, {n} worker(s)", flush=True)
                r = search(n, rates, args.probe, args.confirm, args.sockets, root)
                rows.append(loss_row(n, r, args))
    print()
    print("| measure | skns | baseline (same run) | ratio | goal |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def loss_text(missing: int, drops: int) -> str:
    return "no loss" if not missing and not drops else f"LOSS: missing {missing}, drops {drops}"


def cpu_row(c: dict[str, Any], args: argparse.Namespace) -> str:
    """CPU per datagram: the median run, with the runs' ranges."""
    lo, hi = c["skns_range"]
    rlo, rhi = c["ratio_range"]
    runs = f", median of {c['runs']} runs" if c["runs"] > 1 else ""
    if c["gso"] > 1:
        runs += f", generator: UDP GSO, {c['gso']} datagrams per message"
    ranges = f"; runs {lo:.2f}-{hi:.2f} µs" if c["runs"] > 1 else ""
    ratio_ranges = f" (runs {rlo:.1f}-{rhi:.1f}x)" if c["runs"] > 1 else ""
    return (
        f"| CPU per accepted datagram, whole service (supervisor + 1 worker), user + system, "
        f"sent at {c['achieved'] / 1000:.0f}k/s (asked {args.cpu_rate / 1000:.0f}k/s){runs} "
        f"| {c['skns_us']:.2f} µs ({c['skns_user_us']:.2f} + {c['skns_sys_us']:.2f}){ranges}; "
        f"{c['per_wakeup']:.0f} datagrams per wakeup ({c['wakeups_per_s']:.0f}/s); "
        f"{loss_text(c['missing'], c['drops'])} "
        f"| {c['base_us']:.2f} µs (recv + json.loads); the floor, the worker's receive alone "
        f"(recvmmsg, same slots and pacing, no parsing): "
        f"{c['floor_user_us'] + c['floor_sys_us']:.2f} µs ({c['floor_user_us']:.2f} + "
        f"{c['floor_sys_us']:.2f}) | {c['ratio']:.1f}x cheaper{ratio_ranges} "
        f"| <= 1.0 µs, >= 5x |"
    )


def spread_row(o: dict[str, Any], hashed: list[int], args: argparse.Namespace) -> str:
    """One sender over the workers, beside the kernel's hash of the sender."""
    how = (
        "one datagram per message: the group picks per datagram"
        if o["gso"] == 1
        else f"UDP GSO, {o['gso']} datagrams per message: the group picks per message"
    )
    return (
        f"| one sender socket ({how}) at {o['achieved'] / 1000:.0f}k/s "
        f"(asked {args.one_sender_rate / 1000:.0f}k/s), {len(o['split'])} workers: "
        f"per-worker split (max/min) | {o['split']} ({o['share']:.2f}; spread: {o['spread']}), "
        f"{loss_text(o['missing'], o['drops'])}; service {o['service_cpu_pct']:.0f}% CPU, "
        f"generator {o['generator_cpu_pct']:.0f}% ({o['generator_us']:.2f} µs per datagram) "
        f"| {hashed} ({share(hashed):.2f}), the kernel's hash | | <= 1.2, no loss |"
    )


def loss_row(n: int, r: dict[str, Any], args: argparse.Namespace) -> str:
    verdict = "verified" if r["ok"] else "NOT verified"
    notes = [LIMITS[r["limit"]]]
    if "worker_cpu_pct" in r:
        notes.append(
            f"workers {r['worker_cpu_pct']:.0f}% CPU, generator {r['generator_cpu_pct']:.0f}%"
        )
    goal = ">= 150k/s" if n == 2 else "-"
    return (
        f"| zero-loss rate, {n} worker(s), {args.confirm:g} s | "
        f"{r['achieved'] / 1000:.0f}k/s ({verdict}) | - | - | {goal} ({'; '.join(notes)}) |"
    )
