"""``python -m skns.tasks.holdbench``: what clients that fetch a big result and never read cost.

Each of ``--connections`` raw clients upgrades with a 4 KiB receive buffer, asks for the
result of ``--number``! and reads nothing more. Three task servers in one run:

- baseline: the result written as one frame, every client admitted (the server before);
- fragments: written in fragments (:func:`skns.tasks.server.send_frame`), every client admitted;
- limited: fragments and ``max_connections = --limit``.

For each: the clients admitted, the server's RSS growth and the kernel's TCP buffer growth
(``/proc/net/sockstat``, the whole host's, so run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
from websockets.sync.client import connect

from ..wsraw import upgraded
from . import server as tasks_server
from .local import LocalServer, local_settings

SETTLE = 3.0  # seconds for the servers' writes to fill every buffer they can


def _tcp_bytes() -> int:
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def _masked_text(payload: bytes) -> bytes:
    """A client's text frame (zero mask key), payload under 64 KiB."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, 0x80 | n) + b"\0\0\0\0" + payload
    return struct.pack("!BBH", 0x81, 0x80 | 126, n) + b"\0\0\0\0" + payload


def _reader_that_stops(port: int, request: bytes) -> socket.socket | None:
    """Upgrade, send ``request``, read nothing more; None if the handshake was refused."""
    sock = upgraded(port)
    if sock is not None:
        sock.sendall(_masked_text(request))
    return sock


def measure(number: int, connections: int, limit: int, fragment: int) -> dict[str, float]:
    saved = tasks_server.FRAGMENT
    tasks_server.FRAGMENT = fragment  # the server is forked with it
    try:
        with tempfile.TemporaryDirectory() as state:
            settings = local_settings(
                Path(state), max_connections=limit, soft_workers=1, hard_workers=1, hard_limit=300.0
            )
            with LocalServer(settings) as running, contextlib.ExitStack() as held:
                with connect(running.url, max_size=None, open_timeout=10) as ws:
                    ws.send(orjson.dumps({"type": "factorial", "number": number}))
                    task_id = orjson.loads(ws.recv(timeout=10))["task_id"]
                    size = len(ws.recv(timeout=300))
                port = int(running.url.rstrip("/").rsplit(":", 1)[1])
                request = orjson.dumps({"type": "result", "task_id": task_id})
                process = psutil.Process(running.pid)
                rss, tcp = process.memory_info().rss, _tcp_bytes()
                admitted = 0
                for _ in range(connections):
                    sock = _reader_that_stops(port, request)
                    if sock is not None:
                        held.enter_context(sock)
                        admitted += 1
                time.sleep(SETTLE)
                return {
                    "frame_mb": size / 1e6,
                    "admitted": admitted,
                    "rss_mb": (process.memory_info().rss - rss) / 1e6,
                    "tcp_mb": (_tcp_bytes() - tcp) / 1e6,
                }
    finally:
        tasks_server.FRAGMENT = saved


def main(argv: list[str]) -> int:
    """Print the three runs; exit 0 (a measurement, not a check)."""
    parser = argparse.ArgumentParser(prog="python -m skns.tasks.holdbench", description=__doc__)
    parser.add_argument("--number", type=int, default=1_000_000, help="the factorial fetched")
    parser.add_argument("--connections", type=int, default=200, help="clients that stop reading")
    parser.add_argument("--limit", type=int, default=50, help="max_connections of the third run")
    args = parser.parse_args(argv)
    whole = 1 << 62
    runs = {
        "baseline (whole frame, all admitted)": measure(
            args.number, args.connections, args.connections, whole
        ),
        "fragments, all admitted": measure(
            args.number, args.connections, args.connections, tasks_server.FRAGMENT
        ),
        f"fragments, max_connections {args.limit}": measure(
            args.number, args.connections, args.limit, tasks_server.FRAGMENT
        ),
    }
    base = next(iter(runs.values()))["rss_mb"]
    print(f"{args.connections} clients fetch {args.number}! and never read")
    for label, r in runs.items():
        ratio = f"{base / r['rss_mb']:.1f}x less" if r["rss_mb"] > 0 else "-"
        print(
            f"  {label:<38} frame {r['frame_mb']:.2f} MB, admitted {r['admitted']:>4}, "
            f"server RSS +{r['rss_mb']:7.1f} MB ({ratio}), kernel TCP buffers +{r['tcp_mb']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
