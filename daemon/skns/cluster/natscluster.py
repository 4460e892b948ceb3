"""A throwaway NATS JetStream cluster on loopback, for the tests and the benchmark.

Each node is a ``nats-server`` process with JetStream on a file store in a
temporary directory, a client port, a route port and a monitoring port, all free
loopback ports; every node lists every route, so the nodes form one cluster.
:meth:`NatsCluster.start` returns once the JetStream meta group has a leader
(before that, creating a stream fails), and :meth:`kill`/:meth:`restart` take
one node down and back for failover tests. Everything is removed when stopped.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import SknsError
from ..ports import free_ports


class NatsClusterError(SknsError):
    """The throwaway cluster could not be started."""


def find_server() -> str | None:
    return shutil.which("nats-server")


class _Node:
    def __init__(self, name: str, port: int, route: int, monitor: int, store: Path) -> None:
        self.name = name
        self.port = port
        self.route = route
        self.monitor = monitor
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsCluster:
    """``size`` JetStream nodes in one cluster; ``start()`` then ``stop()`` (or ``with``)."""

    def __init__(self, size: int = 3, server: str | None = None) -> None:
        self.server = server or find_server()
        if self.server is None:
            raise NatsClusterError("nats-server is not installed (apt-get install nats-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="skns-nats-"))
        ports = free_ports(3 * size)
        self.nodes = [
            _Node(f"n{i}", ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], self.dir / f"n{i}")
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _launch(self, node: _Node) -> None:
        routes = ",".join(f"nats://127.0.0.1:{n.route}" for n in self.nodes if n is not node)
        args = [
            self.server,
            "--addr", "127.0.0.1",
            "--port", str(node.port),
            "--http_port", str(node.monitor),
            "--server_name", node.name,
            "--jetstream",
            "--store_dir", str(node.store),
            "--cluster_name", "skns-test",
            "--cluster", f"nats://127.0.0.1:{node.route}",
            "--routes", routes,
        ]  # fmt: skip
        log = (self.dir / f"{node.name}.log").open("ab")
        node.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            self._launch(node)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running node sees the same JetStream meta leader."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = {self._meta_leader(n) for n in self.nodes if n.process is not None}
            if len(leaders) == 1 and None not in leaders:
                return
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise NatsClusterError(f"nats-server {node.name} exited: {self.log(node)}")
            if time.monotonic() > deadline:
                raise NatsClusterError(f"no JetStream meta leader after {timeout} s")
            time.sleep(0.05)

    def _meta_leader(self, node: _Node) -> str | None:
        url = f"http://127.0.0.1:{node.monitor}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                jsz = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return (jsz.get("meta_cluster") or {}).get("leader") or None

    def log(self, node: _Node) -> str:
        try:
            return (self.dir / f"{node.name}.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def kill(self, index: int) -> None:
        """SIGKILL one node (its store stays for :meth:`restart`)."""
        node = self.nodes[index]
        if node.process is not None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()
            node.process = None

    def restart(self, index: int) -> None:
        self._launch(self.nodes[index])

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
                node.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
