"""Executor hosts in cluster mode, for the tests and ``skns-ctl bench cluster``.

A :class:`Host` is a whole ``python -m skns`` (supervisor, router, shards) with
only the executor enabled and ``[cluster]`` pointing at a throwaway NATS
cluster (or, given none, a single host), in a directory of its own (state,
control socket, record logs), on a free port: several of them on one machine
are several hosts. :meth:`Host.kill`
is a kill -9 of the whole host (the supervisor is frozen first, so its children
die by SIGKILL too, not by the SIGTERM it would send them).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ..cluster.natscluster import NatsCluster
from ..localservice import Service, wait_for
from ..ports import free_port
from .checker import Verdict, verify
from .handlers import read_records
from .placement import partition_of

LEASE_TTL = 3.0
PARTITIONS = 16
# What a shard's stats tell of a stall (see stall_report).
STALL_KEYS = ("shard", "partitions", "desired", "lag", "cluster", "lean", "pulls", "takes",
              "handovers", "lease_losses", "done", "in_flight", "backlog", "readers")  # fmt: skip


def tables(
    root: Path,
    nats: NatsCluster | None,
    name: str,
    port: int,
    cluster: dict[str, Any],
    others: dict[str, dict[str, Any]],
    executor: Any,
) -> dict[str, dict[str, Any]]:
    return {
        "service": {
            "state_dir": str(root / "state"),
            "control_socket": str(root / "run" / "control.sock"),
            "log_level": "info",
            **others.get("service", {}),
        },
        "executor": {
            "enabled": True,
            "listen": f"127.0.0.1:{port}",
            "shards": 2,
            "handler": "skns.executor.handlers:record",
            "duration": 0.0,
            **executor,
        },
        "cluster": {}
        if nats is None
        else {
            "nats": nats.urls,
            "name": name,
            "replicas": 3,
            "partitions": PARTITIONS,
            "lease_ttl": LEASE_TTL,
            **cluster,
        },
        **{
            table: {"enabled": False, **others.get(table, {})}
            for table in ("metrics", "relay", "messenger", "tasks")
        },
    }


class Host:
    def __init__(
        self,
        root: Path,
        nats: NatsCluster | None,
        name: str,
        cluster: dict[str, Any] | None = None,
        others: dict[str, dict[str, Any]] | None = None,
        **executor: Any,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.name = name
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.tables = tables(root, nats, name, self.port, cluster or {}, others or {}, executor)
        self.service = self._start()

    def _start(self) -> Service:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        return Service(self.root, self.tables, env)

    def restart(self) -> None:
        """Start the host again after a kill or stop: same name, state dir (instance) and port."""
        assert not self.alive
        self.service = self._start()

    # -- life ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the service runs and /health says this host runs its share."""
        self.service.wait_ready(timeout)
        wait_for(lambda: self.health()[0] == 200, timeout, f"host {self.name} healthy")

    @property
    def alive(self) -> bool:
        return self.service.proc.poll() is None

    def kill(self) -> None:
        """kill -9 of the whole host: supervisor and children."""
        pids = [c["pid"] for c in self.service.children() if c["pid"]]
        os.kill(self.service.pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.kill(self.service.pid, signal.SIGKILL)
        self.service.proc.wait()
        self.service.stop()  # closes the log

    def stop(self) -> None:
        if self.alive:
            self.service.stop(timeout=60)

    # -- looking at it ------------------------------------------------------------------

    def connect(self) -> ClientConnection:
        return connect(self.url, compression=None, max_size=None, open_timeout=10)

    def health(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError as exc:
            return 0, {"error": str(exc)}

    def stats(self, role: str) -> list[dict[str, Any]]:
        """The stats of this host's children of ``role`` (executor-router, executor-shard)."""
        return [c["stats"] or {} for c in self.service.children(role)]

    def owned(self) -> set[int]:
        """The partitions this host's shards run now."""
        return {int(p) for s in self.stats("executor-shard") for p in s.get("partitions", {})}

    def records(self) -> list[list[Any]]:
        return read_records(self.root / "state" / "executor")


@contextlib.contextmanager
def running(nats: NatsCluster, tmp: Path, names: str, **executor: Any) -> Iterator[list[Host]]:
    """Hosts named by the letters of ``names``, each ready (running its share), then stopped."""
    hosts = [Host(tmp / name, nats, name, **executor) for name in names]
    try:
        for host in hosts:
            host.wait_ready()
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def balanced(hosts: list[Host], partitions: int = PARTITIONS) -> bool:
    """Every partition runs on exactly one of ``hosts``, their counts within one of even."""
    owned = [h.owned() for h in hosts]
    sizes = [len(o) for o in owned]
    together = set().union(*owned)
    return sum(sizes) == len(together) == partitions and max(sizes) - min(sizes) <= 1


def check(acked: dict[int, Any], runs: list[list[Any]]) -> Verdict:
    """:func:`verify` for a cluster run: every acked event ran, each account's events first
    ran in order. A partition's owner that lost its lease (a NATS outage, a loaded machine)
    and took it again runs again, in the same process, the events it ran and could not
    commit: at-least-once reruns, each account's again in order, but behind later ones
    already run there; so the order is checked on first runs only (each line is its own
    "process" for the checker)."""
    return verify(acked, [[s, a, i, t, n] for i, (s, a, _, t, n) in enumerate(runs)],
                  exactly_once=False)  # fmt: skip


def all_records(hosts: Iterable[Host]) -> list[list[Any]]:
    """Every record line of these hosts, in the order they were written (by time)."""
    lines = [line for host in hosts for line in host.records()]
    return sorted(lines, key=lambda line: line[3])


def send_pipelined(
    ws: ClientConnection, events: list[dict[str, Any]], batch: int = 500
) -> dict[int, Any]:
    """Send every batch, then read their acks (the router's back-pressure holds the rest);
    acked seq -> account."""
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]
    for chunk in chunks:
        ws.send(orjson.dumps(chunk))
    acked: dict[int, Any] = {}
    for chunk in chunks:
        answer = orjson.loads(ws.recv(timeout=60))
        assert "ack" in answer, answer
        acked.update(zip(answer["ack"], (e["account_id"] for e in chunk), strict=True))
    return acked


def send_batches(
    ws: ClientConnection, events: list[dict[str, Any]], batch: int = 100
) -> dict[int, Any]:
    """Send events in batches, waiting for each ack; acked seq -> account."""
    acked: dict[int, Any] = {}
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        ws.send(orjson.dumps(chunk))
        answer = orjson.loads(ws.recv(timeout=30))
        assert "ack" in answer, answer
        acked.update(zip(answer["ack"], (e["account_id"] for e in chunk), strict=True))
    return acked


class Feeder(threading.Thread):
    """A client sending ``events`` to ``host`` in frames, each after the previous one's answer
    (and ``pause`` s more), until they are all sent or :meth:`stop`; keeps what was acked,
    counts error frames, and ends quietly if the host goes away."""

    def __init__(
        self, host: Host, events: list[dict[str, Any]], batch: int = 50, pause: float = 0.0
    ) -> None:
        super().__init__(daemon=True)
        self.host = host
        self.events = events
        self.batch = batch
        self.pause = pause
        self.acked: dict[int, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.cut = False  # the connection went away mid-run
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)

    def run(self) -> None:
        try:
            with self.host.connect() as ws:
                for i in range(0, len(self.events), self.batch):
                    if self.stopping.is_set():
                        return
                    chunk = self.events[i : i + self.batch]
                    ws.send(orjson.dumps(chunk))
                    answer = orjson.loads(ws.recv(timeout=60))
                    if "ack" in answer:
                        accounts = (e["account_id"] for e in chunk)
                        self.acked.update(zip(answer["ack"], accounts, strict=True))
                    else:
                        self.errors.append(answer)
                    if self.pause:
                        self.stopping.wait(self.pause)
        except (ConnectionClosed, OSError, TimeoutError):
            self.cut = True


def feed(hosts: list[Host], events: list[dict[str, Any]], batch: int = 50) -> list[Feeder]:
    """Start one feeder per host, the events split evenly between them."""
    feeders = [Feeder(h, events[i :: len(hosts)], batch) for i, h in enumerate(hosts)]
    for feeder in feeders:
        feeder.start()
    return feeders


def send_at_once(
    parts: list[tuple[Host, list[dict[str, Any]]]], batch: int, pipelined: bool = True
) -> dict[int, Any]:
    """Each host its part at the same time, one client each (all frames at once, or each
    after the previous one's ack); acked seq -> account. An error frame fails it."""
    send = send_pipelined if pipelined else send_batches
    acked: dict[int, Any] = {}
    errors: list[BaseException] = []

    def one(host: Host, events: list[dict[str, Any]]) -> None:
        try:
            with host.connect() as ws:
                acked.update(send(ws, events, batch=batch))
        except BaseException as exc:  # raised below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=part) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return acked


def statement_workload(
    events: int = 10_000, accounts: int = 1_000, seed: int = 7
) -> tuple[list[dict[str, Any]], float]:
    """The statement's events (uniform over the accounts, each with an ``event_id``) and
    their lower bound in handler durations: the busiest account's event count."""
    rng = random.Random(seed)
    chosen = [rng.randrange(accounts) for _ in range(events)]
    batch = [{"account_id": a, "event_id": i, "payload": {}} for i, a in enumerate(chosen)]
    return batch, float(max(Counter(chosen).values()))


def wait_all_ran(hosts: Iterable[Host], seqs: Iterable[int], timeout: float) -> list[list[Any]]:
    hosts, wanted = list(hosts), set(seqs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = all_records(hosts)
        if wanted <= {line[0] for line in runs}:
            return runs
        time.sleep(0.1)
    runs = all_records(hosts)
    missing = sorted(wanted - {line[0] for line in runs})
    raise AssertionError(
        f"{len(missing)} acked events never ran, e.g. {missing[:10]}\n"
        + stall_report(hosts, missing, seqs if isinstance(seqs, dict) else {})
    )


def stall_report(hosts: list[Host], missing: list[int], accounts: dict[int, Any]) -> str:
    """Why acked events did not run, as far as the hosts can tell: the partitions of the
    missing events (when their accounts are known) and each shard's view of the cluster
    and of each partition it holds (lag, lean connection, pulls, lease losses), so that a
    stall seen once can be told apart afterwards (its logs are in the hosts' directories)."""
    lines = []
    if accounts:
        where = Counter(partition_of(accounts[s], PARTITIONS) for s in missing if s in accounts)
        lines.append(f"missing events by partition: {dict(sorted(where.items()))}")
    for host in hosts:
        lines.append(f"host {host.name} ({host.root}): health {host.health()}")
        if not host.alive:
            continue
        for shard in host.stats("executor-shard"):
            lines.append(f"  {json.dumps({k: shard.get(k) for k in STALL_KEYS})}")
    return "\n".join(lines)
