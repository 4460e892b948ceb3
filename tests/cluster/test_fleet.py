"""The metrics fleet view: three skns instances (separate state dirs and ports) as three
hosts on a real 3-node JetStream cluster, 1 s windows, intervals [1, 6], one shared
``fleet_output`` (the file a takeover resumes from)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from helpers import TinyFs, metrics_port, wait_for
from skns.cluster.lease import lease_bucket
from skns.cluster.natscluster import NatsCluster
from skns.metrics import fleetspool
from skns.metrics.fleet import TAIL_BUCKET
from skns.metrics.fleetmerge import tail_key
from skns.ports import free_port

BIG = 2**62  # A1 values: a host's 1 s sum passes 2**64 after a few datagrams
RATE = 40  # datagrams per second per host
LEASE_TTL = 1.5


def start_hosts(
    start_service: Callable[..., Any],
    cluster: NatsCluster,
    tmp: Path,
    fleet: Path,
    intervals: list[int],
) -> tuple[list[Any], list[str]]:
    """Three hosts (names unique to the test: the cluster is the module's), once one holds
    the lease and has heard from every host."""
    names = [f"h{os.getpid() % 1000}{tmp.name[-6:]}{i}".replace("_", "") for i in range(3)]
    names = [n.replace(".", "")[:60] for n in names]
    hosts = []
    for name in names:
        metrics = {
            "listen": "127.0.0.1:0",
            "workers": 1,
            "window": 1,
            "intervals": intervals,
            "output": str(tmp / f"{name}.jsonl"),
            "fleet_output": str(fleet),
        }
        table = {"nats": cluster.urls, "name": name, "replicas": 3, "lease_ttl": LEASE_TTL}
        hosts.append(start_service(metrics=metrics, cluster=table, wait=False))
    for host in hosts:  # started side by side: a start is most of a second
        host.wait_ready()
    wait_for(lambda: holder(hosts) is not None, 20, "a lease holder")
    # A host joining is known from its first partial on: that one may be late (counted).
    wait_for(lambda: merger(hosts)["live_hosts"] == sorted(names), 20, "every host heard")
    return hosts, names


class Senders:
    """One thread per host sending RATE datagrams a second (bounded by ``stop``)."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._send, args=(p,)) for p in ports.values()]

    def _send(self, port: int) -> None:
        rng = random.Random(port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            deadline = time.monotonic() + 60
            while not self.stopped.is_set() and time.monotonic() < deadline:
                a = [
                    BIG + rng.randrange(1000),
                    rng.randrange(-1000, 1000),
                    rng.randrange(-1000, 1000),
                ]
                doc = {"A1": a[0], "A2": a[1], "A3": a[2]}
                s.sendto(json.dumps(doc).encode(), ("127.0.0.1", port))
                time.sleep(1 / RATE)

    def stop(self, port: int | None = None) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join()

    def __enter__(self) -> Senders:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def fleet_stats(host: Any) -> dict[str, Any] | None:
    try:
        rows = host.children("fleet")
    except Exception:
        return None
    return rows[0]["stats"] if rows and rows[0]["stats"] else None


def holder(hosts: list[Any]) -> int | None:
    for i, h in enumerate(hosts):
        if h.proc.poll() is None and (fleet_stats(h) or {}).get("holder"):
            return i
    return None


def merge(rows: list[dict[str, Any]]) -> dict[str, int]:
    used = [r for r in rows if r["count"]]
    return {
        "A1_sum": sum(r["A1_sum"] for r in rows),
        "A2_max": max((r["A2_max"] for r in used), default=0),
        "A3_min": min((r["A3_min"] for r in used), default=0),
        "count": sum(r["count"] for r in rows),
    }


def settled(
    fleet: Path, tmp: Path, names: list[str], until: float | None = None
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The hosts' lines and the fleet lines, once every window that ended before ``until``
    (default: a window after now) is in the fleet view."""
    end = time.time() + 1 if until is None else until
    wait_for(lambda: any(r["timestamp"] >= end for r in lines(fleet)), 20, "the fleet lines")
    return hosts_lines(tmp, names), lines(fleet)


def hosts_lines(tmp: Path, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each host's own lines (it writes a window's line before it spools the window for
    the fleet view: all there for the windows of any fleet line read before)."""
    return {n: lines(tmp / f"{n}.jsonl") for n in names}


@contextlib.contextmanager
def sending(hosts: list[Any], names: list[str], fleet: Path) -> Iterator[float]:
    """Datagrams to every host, from once the fleet view has a line a window past the time
    given (the first window end all of whose lines carry them)."""
    since = time.time() + 1
    with Senders({n: metrics_port(h) for n, h in zip(names, hosts, strict=True)}):
        wait_for(lambda: any(r["timestamp"] >= since + 1 for r in lines(fleet)), 20, "lines")
        yield since


def check(
    fleet: list[dict[str, Any]],
    local: dict[str, list[dict[str, Any]]],
    maybe: set[str],
    since: float,
    long: int = 6,
) -> list[int]:
    """Every line once, in output order: base windows follow each other without a gap or a
    repeat, each followed by the line of the ``long`` s interval it ends. From window end
    ``since`` on, every 1 s fleet line is the merge of the hosts' 1 s lines of its window (a
    host in ``maybe`` may be left out: it was killed before publishing its last windows),
    with ``hosts`` saying how many; every long line the merge of its 1 s lines, with the
    fewest hosts of theirs."""
    by_key: dict[tuple[Any, str], dict[str, dict[str, Any]]] = {}
    for name, rows in local.items():
        for r in rows:
            by_key.setdefault((r["timestamp"], r["count_type"]), {})[name] = r
    base = {r["timestamp"]: r for r in fleet if r["count_type"] == "1s"}
    ends = [r["timestamp"] for r in fleet if r["count_type"] == "1s"]
    assert ends == list(range(ends[0], ends[0] + len(ends))), ends
    order = [(t, c) for t in ends for c in ["1s"] + [f"{long}s"] * (t % long == 0)]
    assert [(r["timestamp"], r["count_type"]) for r in fleet] == order
    for r in (r for r in fleet if r["timestamp"] >= since):
        got = {k: r[k] for k in ("A1_sum", "A2_max", "A3_min", "count")}
        if r["count_type"] != "1s":
            ts = range(r["timestamp"] - long + 1, r["timestamp"] + 1)
            span = [base[t] for t in ts if t in base]
            assert got == merge(span) and r["hosts"] == min(x["hosts"] for x in span), (r, span)
            continue
        rows = by_key.get((r["timestamp"], "1s"), {})
        choices = [rows] + [{n: x for n, x in rows.items() if n != m} for m in maybe if m in rows]
        assert any(got == merge(list(c.values())) for c in choices), (r, rows)
        assert r["hosts"] in {len(c) for c in choices if got == merge(list(c.values()))}
    return ends


@pytest.fixture
def three(
    start_service: Callable[..., Any], nats_cluster: NatsCluster, tmp_path: Path
) -> tuple[list[Any], Path, list[str]]:
    fleet = tmp_path / "fleet.jsonl"
    hosts, names = start_hosts(start_service, nats_cluster, tmp_path, fleet, [1, 6])
    return hosts, fleet, names


def kill_9(host: Any) -> float:
    """SIGKILL a host's processes, the fleet child first: it must not let the lease go
    gracefully. Returns the time of the kill."""
    pids = [c["pid"] for c in host.children("fleet")]
    pids += [host.pid] + [c["pid"] for c in host.children("udp-worker")]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    host.proc.wait()
    return killed_at


def merger(hosts: list[Any]) -> dict[str, Any]:
    i = holder(hosts)
    return fleet_stats(hosts[i])["merger"] if i is not None else {"live_hosts": []}


def test_fleet_lines_are_the_exact_merge_of_the_hosts_lines(
    three: tuple[list[Any], Path, list[str]], tmp_path: Path
) -> None:
    hosts, fleet, names = three
    ports = {n: metrics_port(h) for n, h in zip(names, hosts, strict=True)}
    late = merger(hosts)["late_partials"]
    # A spooled window that cannot be read is dropped with an error, and counted.
    spool = tmp_path / "svc0" / "state" / "fleet-spool"
    (spool / f"{0:020d}.json").write_text("{not json")
    since = time.time() + 1
    seen: dict[int, float] = {}  # when each 1 s fleet line appeared (polled every 10 ms)
    with Senders(ports):
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            now = time.time()
            for r in lines(fleet):
                if r["count_type"] == "1s":
                    seen.setdefault(r["timestamp"], now)
            time.sleep(0.01)
    local, rows = settled(fleet, tmp_path, names)
    base = check(rows, local, set(), since)
    full = [r for r in rows if r["count_type"] == "1s" and r["hosts"] == 3 and r["count"]]
    assert len(full) >= 5, rows
    assert max(r["A1_sum"] for r in rows) > 2**64  # exact: compared with the local sums
    assert any(r["count_type"] == "6s" for r in rows)
    # Every local window inside the fleet view's span is in it.
    for name in names:
        spanned = {r["timestamp"] for r in local[name] if base[0] <= r["timestamp"] <= base[-1]}
        assert spanned <= set(base)
    # A window spooled again after it was published (a crash between JetStream's ack and
    # the unlink) is stored once: the merger never sees it.
    again = next(r for r in local[names[0]] if r["count_type"] == "1s" and r["timestamp"] > since)
    (spool / f"{again['timestamp'] - 1:020d}.json").write_text(json.dumps(again))
    wait_for(lambda: fleet_stats(hosts[0])["republished"] == 1, 20, "the republish")
    time.sleep(0.5)
    assert lines(fleet)[: len(rows)] == rows
    stats = merger(hosts)
    assert stats["late_partials"] == late and stats["duplicate_partials"] == 0
    assert fleet_stats(hosts[0])["bad_partials"] == 1
    delays = sorted(t - end for end, t in seen.items() if end >= since)
    assert len(delays) >= 5
    print(
        f"\nfleet line delay after the window's end, {len(delays)} windows under load: "
        f"p50 {statistics.median(delays) * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms "
        f"(the merger's own count: p50 {stats['delay_p50'] * 1000:.0f} ms)"
    )


def test_kill_9_of_the_lease_holder_another_takes_over_without_a_gap_or_a_double(
    three: tuple[list[Any], Path, list[str]], tmp_path: Path, start_service: Callable[..., Any]
) -> None:
    hosts, fleet, names = three
    ports = {n: metrics_port(h) for n, h in zip(names, hosts, strict=True)}
    since = time.time() + 1
    with Senders(ports):
        wait_for(lambda: any(r["timestamp"] >= since + 3 for r in lines(fleet)), 20, "lines before")
        victim = holder(hosts)
        assert victim is not None
        killed_at = kill_9(hosts[victim])
        wait_for(lambda: holder(hosts) not in (None, victim), 20, "another lease holder")
        wait_for(
            lambda: any(r["timestamp"] > killed_at + 4 for r in lines(fleet)), 20, "lines after"
        )
    local, rows = settled(fleet, tmp_path, names)
    base = check(rows, local, {names[victim]}, since)
    assert base[0] < killed_at - 1 and base[-1] > killed_at + 4
    after = [r for r in rows if r["count_type"] == "1s" and r["timestamp"] > killed_at + 1]
    assert after and all(r["hosts"] == 2 for r in after), after
    before = [r for r in rows if r["count_type"] == "1s" and r["timestamp"] < killed_at - 1]
    assert any(r["hosts"] == 3 for r in before)

    # The victim comes back with a window it closed after the kill still spooled (as if it
    # had crashed before publishing it): written without it already, the partial is
    # counted as late, never merged into the written line; later windows hold it again.
    late = merger(hosts)["late_partials"]
    missed = after[0]
    spool = tmp_path / f"svc{victim}" / "state" / "fleet-spool"
    spool.mkdir(exist_ok=True)
    own = {**missed, "A1_sum": 1, "A2_max": 1, "A3_min": 1, "count": 1}
    del own["hosts"]
    (spool / f"{missed['timestamp'] - 1:020d}.json").write_text(json.dumps(own))
    tables = hosts[victim].tables
    back_at = time.time()
    hosts[victim] = start_service(
        service={"state_dir": tables["service"]["state_dir"]},
        metrics=tables["metrics"],
        cluster=tables["cluster"],
    )
    wait_for(lambda: merger(hosts)["late_partials"] > late, 20, "the late partial counted")
    wait_for(
        lambda: any(r["hosts"] == 3 and r["timestamp"] > back_at for r in lines(fleet)),
        20,
        "the victim merged again",
    )
    assert lines(fleet)[: len(rows)] == rows


def test_the_holder_follows_a_rotation_of_the_fleet_output(
    three: tuple[list[Any], Path, list[str]], tmp_path: Path
) -> None:
    # logrotate renames the file, then asks for a reopen: `skns-ctl reopen`, then SIGHUP
    # (a reload). The holder's lines go on in a new file at the path, and the rotated
    # files and the new one hold every window once, in order, with no gap.
    hosts, fleet, names = three
    leader = holder(hosts)
    assert leader is not None
    rotated = [fleet.with_name("fleet.jsonl.1"), fleet.with_name("fleet.jsonl.2")]

    def rotate(to: Path, ask: Callable[[], object]) -> None:
        fleet.rename(to)
        asked_at = time.time()
        ask()
        wait_for(lambda: any(r["timestamp"] > asked_at + 1 for r in lines(fleet)), 20, "new lines")

    with sending(hosts, names, fleet) as since:
        rotate(rotated[0], lambda: hosts[leader].ctl("reopen").check_returncode())
        rotate(rotated[1], lambda: os.kill(hosts[leader].pid, signal.SIGHUP))
    files = [lines(rotated[0]), lines(rotated[1]), lines(fleet)]
    assert holder(hosts) == leader  # the same holder followed (a new one opens by path)
    assert all(files), files
    check(files[0] + files[1] + files[2], hosts_lines(tmp_path, names), set(), since)


def test_a_holder_taking_over_a_rotated_empty_file_resumes_after_the_renamed_files_end(
    three: tuple[list[Any], Path, list[str]], tmp_path: Path
) -> None:
    # logrotate renames the file (`create`: an empty one in its place) and the holder dies
    # before its next line: the next holder finds nothing in the file to resume after,
    # yet resumes after the renamed file's last line (recorded in the key-value store),
    # with the open 6 s interval's totals, not up to an hour back.
    hosts, fleet, names = three
    rotated = fleet.with_name("fleet.jsonl.1")
    with sending(hosts, names, fleet) as since:
        victim = holder(hosts)
        assert victim is not None
        os.kill(hosts[victim].children("fleet")[0]["pid"], signal.SIGSTOP)
        fleet.rename(rotated)
        fleet.touch()
        killed_at = kill_9(hosts[victim])
        wait_for(lambda: holder(hosts) not in (None, victim), 20, "another lease holder")
        wait_for(lambda: any(r["timestamp"] > killed_at + 2 for r in lines(fleet)), 20, "new")
    old, new = lines(rotated), lines(fleet)
    assert old and new, (old, new)
    check(old + new, hosts_lines(tmp_path, names), {names[victim]}, since)


def test_a_damaged_record_of_the_last_lines_is_ignored_with_an_error(
    start_service: Callable[..., Any], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.jsonl"

    async def damage() -> None:
        nc = await nats.connect(nats_cluster.urls[0])
        kv = await lease_bucket(nc.jetstream(), TAIL_BUCKET, fleetspool.KEEP, 3)
        await kv.put(tail_key(fleet, 1, [1, 6]), b'[{"timestamp": 1')
        await nc.close()

    asyncio.run(damage())
    hosts, names = start_hosts(start_service, nats_cluster, tmp_path, fleet, [1, 6])
    with sending(hosts, names, fleet) as since:
        pass
    local, rows = settled(fleet, tmp_path, names)
    check(rows, local, set(), since)
    leader = holder(hosts)
    assert leader is not None and "ignoring the recorded fleet tail" in hosts[leader].log()


def hold_back_after_a_base_line(fleet: Path, pid: int, long: int) -> int:
    """Let the fleet child ``pid`` (the holder's) write the next base line whose window
    ends a ``long`` s interval, and no byte more: its file size limit (RLIMIT_FSIZE; a
    write past it fails with EFBIG, as a full disk fails with ENOSPC) is set to the end of
    that line, so the write of the window cuts the long line after it and holds it back.
    No datagrams are sent: every line is zeros, so the next one's length is known.
    Returns that window's end."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)  # the soft limit only: no root
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = fleet.read_bytes() if fleet.exists() else b""
        last = json.loads(data.splitlines()[-1]) if data.endswith(b"\n") else {}
        end = last.get("timestamp", 0) + 1
        if last.get("count_type") == "1s" and end % long == 0:
            assert not last["count"], last
            size = len(data) + len(json.dumps({**last, "timestamp": end})) + 1
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))
            if fleet.stat().st_size == len(data):
                return end
            # Written meanwhile: try the next interval.
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
            time.sleep(1)
        time.sleep(0.005)
    raise AssertionError("no base line to hold the long line after")


def test_a_long_line_held_back_after_its_base_line_is_written_by_the_next_holder(
    start_service: Callable[..., Any], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # The holder's write of window T (the 1 s line, then the 2 s line T ends) is cut after
    # the 1 s line, and the holder dies holding the rest: the next holder resumes after
    # window T and owes its 2 s line (not written, though its base line is).
    fleet = tmp_path / "fleet.jsonl"
    hosts, names = start_hosts(start_service, nats_cluster, tmp_path, fleet, [1, 2])
    since = time.time() + 1
    victim = holder(hosts)
    assert victim is not None
    fleet_pid = hosts[victim].children("fleet")[0]["pid"]
    end = hold_back_after_a_base_line(fleet, fleet_pid, 2)
    output = lambda: fleet_stats(hosts[victim])["output"]  # noqa: E731
    wait_for(lambda: output()["lines_pending"] >= 2, 20, "the holder holding lines back")
    assert output()["error"] == "File too large"
    assert lines(fleet)[-1]["timestamp"] == end and lines(fleet)[-1]["count_type"] == "1s"
    killed_at = kill_9(hosts[victim])
    wait_for(lambda: holder(hosts) not in (None, victim), 20, "another lease holder")
    local, rows = settled(fleet, tmp_path, names, killed_at + 2)
    check(rows, local, {names[victim]}, since, long=2)
    assert [(r["timestamp"], r["count_type"]) for r in rows].count((end, "2s")) == 1


def test_lines_a_holder_held_on_a_disk_full_from_the_start_are_written_by_the_next(
    start_service: Callable[..., Any],
    nats_cluster: NatsCluster,
    tmp_path: Path,
    tiny_fs: Callable[[int], TinyFs],
) -> None:
    # The first holder of a fresh fleet output cannot write a byte of it: when it dies,
    # the file is still empty, yet the windows it held are owed.
    fs = tiny_fs(64 * 1024)
    fs.fill()
    fleet = fs.path / "fleet.jsonl"
    hosts, names = start_hosts(start_service, nats_cluster, tmp_path, fleet, [1, 2])
    since = time.time() + 1
    victim = holder(hosts)
    assert victim is not None
    output = lambda: fleet_stats(hosts[victim])["output"] or {}  # noqa: E731
    wait_for(lambda: output().get("lines_pending", 0) >= 1, 20, "the holder holding lines")
    held_from = time.time()  # the holder's first window ended before this
    assert output()["error"] == "No space left on device"
    # Held for 2 s more: without the fix the next holder starts at its own start less
    # the grace, after the kill (the lease outlives it by lease_ttl, 1.5 s, the grace 2 s).
    time.sleep(2)
    assert not fleet.exists() or fleet.stat().st_size == 0
    killed_at = kill_9(hosts[victim])
    fs.free()
    wait_for(lambda: holder(hosts) not in (None, victim), 20, "another lease holder")
    local, rows = settled(fleet, tmp_path, names, killed_at + 2)
    check(rows, local, {names[victim]}, since, long=2)
    assert rows[0]["timestamp"] <= held_from, (rows[0], held_from, killed_at)


def test_without_cluster_nothing_imports_nats_and_there_is_no_fleet_child(
    start_service: Callable[..., Any], tmp_path: Path
) -> None:
    code = "import sys, skns.metrics.service, skns.supervisor; print('nats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    metrics = {"listen": "127.0.0.1:0", "workers": 1, "window": 1, "intervals": [1]}
    metrics["output"] = str(tmp_path / "metrics.jsonl")
    svc = start_service(metrics={**metrics, "fleet_output": str(tmp_path / "fleet.jsonl")})
    assert svc.children("fleet") == [] and len(svc.children("udp-worker")) == 1
    assert "fleet_output is set but [cluster] is not" in svc.log()


def start_alone(
    start_service: Callable[..., Any], tmp_path: Path, state: Path, window: float
) -> Any:
    """A service with the fleet view on, one worker, and no NATS server where it looks."""
    nowhere = f"nats://127.0.0.1:{free_port()}"
    return start_service(
        service={"state_dir": str(state)},
        metrics={
            "listen": "127.0.0.1:0",
            "workers": 1,
            "window": window,
            "intervals": [window],
            "output": str(tmp_path / "metrics.jsonl"),
            "fleet_output": str(tmp_path / "fleet.jsonl"),
        },
        cluster={"nats": [nowhere], "name": "alone"},
    )


def test_no_nats_and_a_spool_that_cannot_be_written_stop_nothing_local(
    start_service: Callable[..., Any], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "fleet-spool").write_text("in the way")
    svc = start_alone(start_service, tmp_path, state, 0.5)
    wait_for(lambda: len(lines(tmp_path / "metrics.jsonl")) >= 3, 20, "local lines")
    status = svc.status()
    assert status["subsystems"]["metrics"]["fleet_spool_errors"] >= 3
    stats = wait_for(lambda: fleet_stats(svc), 20, "the fleet child's stats")
    assert stats["cluster"]["connected"] is False and stats["holder"] is False
    assert not (tmp_path / "fleet.jsonl").exists()
    started = time.monotonic()
    assert svc.stop() == 0
    assert time.monotonic() - started < 5  # the fleet child stops while still connecting


def test_while_nats_stays_away_the_spool_keeps_only_what_the_stream_would(
    start_service: Callable[..., Any], tmp_path: Path
) -> None:
    # Windows spooled more than the stream's max age ago (a long outage) leave the spool,
    # counted; the recent ones stay for the publisher.
    state = tmp_path / "state"
    spool = state / "fleet-spool"
    spool.mkdir(parents=True)
    base = 0.5
    now = int(time.time() / base)
    old = [now - int(fleetspool.KEEP / base) - k for k in range(1, 6)]
    recent = now - 10
    for w in [*old, recent]:
        (spool / f"{w:020d}.json").write_text("{}")
    svc = start_alone(start_service, tmp_path, state, base)
    wait_for(
        lambda: svc.status()["subsystems"]["metrics"]["fleet_spool_expired"] == len(old),
        20,
        "the expired windows dropped",
    )
    names = {int(p.stem) for p in spool.iterdir()}
    assert not names & set(old) and recent in names
    assert "dropping the oldest" in svc.log()
    assert svc.stop() == 0
