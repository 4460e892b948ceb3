"""Metrics datagrams at a steady rate from several sockets, and a TCP connect prober.

Run inside the container, on any Python >= 3.11 (stdlib only):

    python3 loadgen.py --udp 127.0.0.1:9125 --rate 10000 --sockets 16 --seconds 10 \
        --tcp 127.0.0.1:9127 --probe-interval 0.01 --control /run/skns/control.sock

Prints one JSON object: datagrams sent (and sends that failed: those were not sent), the
wall-clock span they were sent in, the prober's connects: ok, refused, timed out, and with
``--control PATH`` the status requests to the control socket: answered, refused, cut. Every
datagram is ``{"A1": 1, "A2": a, "A3": b}`` with a and b varying, so that A1_sum equals the
count and the max and min of the longer intervals are worth checking. Bounded: it sends
rate * seconds datagrams and stops at seconds + 5 whatever it has sent.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import threading
import time


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def datagram(i: int) -> bytes:
    return b'{"A1":1,"A2":%d,"A3":%d}' % (i % 1000 + 1, -(i % 997))


def send(addr: tuple[str, int], rate: float, sockets: int, seconds: float) -> dict[str, float]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    total = int(rate * seconds)
    sent = failed = i = 0
    started_wall, start = time.time(), time.monotonic()
    give_up = start + seconds + 5
    while i < total and time.monotonic() < give_up:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            try:
                socks[i % sockets].sendto(datagram(i), addr)
                sent += 1
            except OSError:
                failed += 1
            i += 1
        time.sleep(0.001)
    ended_wall = time.time()
    for s in socks:
        s.close()
    return {"sent": sent, "send_failed": failed, "started": started_wall, "ended": ended_wall}


class Prober(threading.Thread):
    """Connects to addr every interval until stopped; counts how each connect ended."""

    def __init__(self, addr: tuple[str, int], interval: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.addr, self.interval, self.timeout = addr, interval, timeout
        self.counts = {"ok": 0, "refused": 0, "timeout": 0, "other": 0}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                with socket.create_connection(self.addr, timeout=self.timeout):
                    self.counts["ok"] += 1
            except ConnectionRefusedError:
                self.counts["refused"] += 1
            except TimeoutError:
                self.counts["timeout"] += 1
            except OSError as exc:
                key = "refused" if exc.errno == errno.ECONNREFUSED else "other"
                self.counts[key] += 1


class StatusProber(threading.Thread):
    """Asks the control socket at path for the status every interval until stopped; counts
    how each request ended: answered, refused (no socket, or nobody listening), cut (the
    connection closed without an answer), timed out."""

    def __init__(self, path: str, interval: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.path, self.interval, self.timeout = path, interval, timeout
        self.counts = {"ok": 0, "refused": 0, "cut": 0, "timeout": 0, "other": 0}
        self.stop = threading.Event()

    def ask(self) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                return "refused"
            sock.sendall(b'{"command": "status"}\n')
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        if not answer:
            return "cut"
        return "ok" if json.loads(answer).get("ok") else "other"

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.counts[self.ask()] += 1
            except TimeoutError:
                self.counts["timeout"] += 1
            except (OSError, ValueError):
                self.counts["other"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--udp", type=endpoint, required=True)
    parser.add_argument("--rate", type=float, default=10000)
    parser.add_argument("--sockets", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--tcp", type=endpoint, help="prober target (none: no prober)")
    parser.add_argument("--probe-interval", type=float, default=0.01)
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    parser.add_argument("--control", help="control socket to ask for the status (none: no)")
    args = parser.parse_args()
    probers: dict[str, Prober | StatusProber] = {}
    if args.tcp:
        probers["connects"] = Prober(args.tcp, args.probe_interval, args.probe_timeout)
    if args.control:  # each request is a status: not as often as the connects
        interval = max(args.probe_interval, 0.05)
        probers["statuses"] = StatusProber(args.control, interval, args.probe_timeout)
    for prober in probers.values():
        prober.start()
    result: dict[str, object] = dict(send(args.udp, args.rate, args.sockets, args.seconds))
    for key, prober in probers.items():
        prober.stop.set()
        prober.join(args.probe_timeout + 1)
        result[key] = prober.counts
    print(json.dumps(result))


if __name__ == "__main__":
    main()
