"""Nothing lost across a restart of the supervisor: the real service under UDP load and
TCP connects, restarted in place (skns-ctl restart, SIGUSR2) and killed with SIGKILL
then started again with its fds handed back as systemd's fd store would."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    AS_LISTEN_PID,
    Service,
    metrics_port,
    metrics_table,
    passing_fds,
    toml_dumps,
    wait_for,
)
from skns.control import request
from skns.errors import ControlError, ServiceNotRunning
from skns.ports import free_port

RATE = 10_000  # datagrams per second
SENDERS = 16  # sockets, so the kernel spreads them over the workers
# Half-second windows and a 2.5 s interval: several of each close while the load runs.
WINDOW = 0.5
LONG = 2.5
BASE, MERGED = f"{WINDOW:g}s", f"{LONG:g}s"


def send(port: int, seconds: float, sent: Any) -> None:
    """RATE datagrams/s for ``seconds`` from SENDERS sockets, paced every 5 ms; the number
    sent goes to ``sent``. Values vary so that max and min are checked too."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SENDERS)]
    payloads = [
        json.dumps({"A1": i % 1000, "A2": i % 777, "A3": -(i % 555)}).encode() for i in range(4096)
    ]
    target = ("127.0.0.1", port)
    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * RATE)
        while n < due:
            socks[n % SENDERS].sendto(payloads[n % 4096], target)
            n += 1
        time.sleep(0.005)
    sent.value = n


class Sender:
    """The load, in its own process so that the test's waiting does not slow it down."""

    def __init__(self, port: int, seconds: float) -> None:
        ctx = multiprocessing.get_context("fork")
        self.sent = ctx.Value("q", -1)
        self.proc = ctx.Process(target=send, args=(port, seconds, self.sent), daemon=True)
        self.proc.start()

    def join(self, timeout: float = 60.0) -> int:
        self.proc.join(timeout)
        assert self.sent.value >= 0, "the sender did not finish"
        return self.sent.value


class Prober(threading.Thread):
    """Connects to each port again and again, and asks the control socket for the status;
    counts refused connects and status requests not answered."""

    def __init__(self, ports: list[int], control: Path) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.control = control
        self.ok = 0
        self.refused = 0
        self.other: list[str] = []
        self.answered = 0
        self.unanswered: list[str] = []
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            for port in self.ports:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=10):
                        self.ok += 1
                except ConnectionRefusedError:
                    self.refused += 1
                except OSError as exc:
                    self.other.append(repr(exc))
            try:
                request(self.control, "status", timeout=10)
                self.answered += 1
            except (ServiceNotRunning, ControlError, OSError) as exc:
                self.unanswered.append(repr(exc))
            time.sleep(0.005)

    def stop(self) -> None:
        self.halt.set()
        self.join()


class FdKeeper(threading.Thread):
    """What systemd does with FDSTORE=1 messages on $NOTIFY_SOCKET: keeps the fds by name."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.fds: dict[str, int] = {}
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 16)
            except TimeoutError:
                continue
            fields = dict(x.split("=", 1) for x in data.decode().splitlines() if "=" in x)
            name = fields.get("FDNAME", "unknown")
            if fields.get("FDSTOREREMOVE") == "1" and name in self.fds:
                os.close(self.fds.pop(name))
            for fd in fds:
                if fields.get("FDSTORE") == "1":
                    if name in self.fds:
                        os.close(self.fds[name])
                    self.fds[name] = fd
                else:
                    os.close(fd)

    def close(self) -> None:
        self.halt.set()
        self.join()
        self.sock.close()
        for fd in self.fds.values():
            os.close(fd)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def written_through(path: Path, t: float, label: str = BASE) -> list[dict]:
    """Every line, once the ``label`` window ending at or after ``t`` is written."""

    def done() -> list[dict] | None:
        rows = lines(path)
        return rows if any(r["count_type"] == label and r["timestamp"] >= t for r in rows) else None

    return wait_for(done, timeout=60, what=f"the window ending {t}")


def check_lines(rows: list[dict], sent: int) -> None:
    """Every datagram counted once; each longer line is the merge of its base lines."""
    base = [r for r in rows if r["count_type"] == BASE]
    assert sum(r["count"] for r in base) == sent
    assert len({r["timestamp"] for r in base}) == len(base), "a window written twice"
    longs = [r for r in rows if r["count_type"] == MERGED]
    assert longs
    for long in longs:
        part = [r for r in base if long["timestamp"] - LONG < r["timestamp"] <= long["timestamp"]]
        full = [r for r in part if r["count"]]
        assert long["count"] == sum(r["count"] for r in part), long
        assert long["A1_sum"] == sum(r["A1_sum"] for r in part), long
        if full:
            assert long["A2_max"] == max(r["A2_max"] for r in full), long
            assert long["A3_min"] == min(r["A3_min"] for r in full), long


def finish(
    event: str, sender: Sender, prober: Prober, out: Path, back_in: float, cut: int = 0
) -> None:
    """Once the load has run across the event: every datagram counted once, each longer
    line the merge of its base lines, no connect refused, every status request answered
    but ``cut`` (in the hands of a supervisor killed). Prints the figures (pytest -s)."""
    sent = sender.join()
    end = time.time()
    time.sleep(0.5)
    prober.stop()
    rows = written_through(out, end + WINDOW)
    counted = sum(r["count"] for r in rows if r["count_type"] == BASE)
    print(
        f"\n{event}: sent {sent}, counted {counted}, lost {sent - counted}; "
        f"connects ok {prober.ok}, refused {prober.refused}; status answered "
        f"{prober.answered}, not {len(prober.unanswered)}; back in {back_in:.2f} s"
    )
    assert sent > RATE * 3  # the load really ran (the machine may be slow: not all of it)
    check_lines(rows, sent)
    assert prober.refused == 0, prober.refused
    # The control socket is kept like the ports: asked meanwhile, the next run answers.
    assert prober.answered > 5, prober.unanswered[:3]
    assert len(prober.unanswered) <= cut, prober.unanswered[:3]
    assert all("without an answer" in e for e in prober.unanswered), prober.unanswered


def tables(tmp_path: Path) -> dict[str, Any]:
    return {
        "metrics": metrics_table(tmp_path, window=WINDOW, intervals=[WINDOW, LONG]),
        "messenger": {"listen": [f"127.0.0.1:{free_port()}"]},
        "tasks": {"listen": f"127.0.0.1:{free_port()}", "soft_workers": 1, "hard_workers": 1},
    }


def tcp_ports(svc: Service) -> list[int]:
    return [
        int(svc.tables["messenger"]["listen"][0].rpartition(":")[2]),
        int(svc.tables["tasks"]["listen"].rpartition(":")[2]),
    ]


def restarted(svc: Service, before: float) -> dict[str, Any]:
    def again() -> dict[str, Any] | None:
        with contextlib.suppress(Exception):
            status = svc.status()
            s = status["service"]
            if s["started"] != before and s["state"] == "running":
                return status
        return None

    return wait_for(again, timeout=60, what="the restarted service")


def test_restart_in_place_loses_no_datagram_and_refuses_no_connect(start_service, tmp_path):
    svc = start_service(**tables(tmp_path))
    out = Path(svc.tables["metrics"]["output"])
    pid = svc.pid
    sender = Sender(metrics_port(svc), 5.5)
    prober = Prober(tcp_ports(svc), svc.socket)
    time.sleep(1.5)
    started = svc.status()["service"]["started"]
    t0 = time.monotonic()
    result = svc.ctl("restart")
    back_in = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert "restarted" in result.stdout
    status = restarted(svc, started)
    assert status["service"]["pid"] == pid  # in place
    time.sleep(0.5)
    os.kill(svc.pid, signal.SIGUSR2)
    restarted(svc, status["service"]["started"])
    finish("restart + SIGUSR2", sender, prober, out, back_in)
    assert prober.ok > 50 and not prober.other, (prober.ok, prober.other[:3])
    assert svc.status()["subsystems"]["metrics"]["kernel_drops"] == 0
    assert svc.log().count("kept the socket") >= 2 * 4  # 2 UDP + 2 TCP, twice


@pytest.fixture
def keeper(tmp_path):
    k = FdKeeper(tmp_path / "notify.sock")
    yield k
    k.close()


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def test_kill_9_then_start_with_the_kept_fds_loses_nothing(start_service, keeper, tmp_path):
    env = {"NOTIFY_SOCKET": keeper.path}
    svc = start_service(env=env, **tables(tmp_path))
    out = Path(svc.tables["metrics"]["output"])
    children = [c["pid"] for c in svc.children()]
    # 2 UDP, 2 TCP, the metrics state's memfd, the control socket
    wait_for(lambda: len(keeper.fds) == 6, what="6 fds in the store")
    sender = Sender(metrics_port(svc), 5.0)
    prober = Prober(tcp_ports(svc), svc.socket)
    time.sleep(1.5)
    t0 = time.monotonic()
    svc.proc.kill()
    svc.proc.wait()
    # The children die with it (PR_SET_PDEATHSIG); systemd would wait for them too.
    wait_for(lambda: all(gone(pid) for pid in children), what="the old children gone")
    time.sleep(0.5)  # down for a while: the kernel queues hold the traffic
    run_env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_USEC"}
    run_env.update(env)
    second = Service(
        svc.root,
        svc.tables,
        run_env,
        prefix=tuple(AS_LISTEN_PID),
        popen=passing_fds(dict(keeper.fds), run_env),
    )
    try:
        second.wait_ready()
        # One status request may have been taken by the supervisor killed.
        finish("kill -9, fds kept", sender, prober, out, time.monotonic() - t0, cut=1)
        log = second.log()
        assert "kept the socket" in log and "resumed the metrics state" in log
    finally:
        second.stop()


def test_a_restart_with_more_workers_carries_the_open_partials_over(start_service, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path, window=2.0, intervals=[2.0, 10.0]))
    out = Path(svc.tables["metrics"]["output"])
    port = metrics_port(svc)
    # Early in a window, so that the restart falls inside it.
    time.sleep(2.1 - time.time() % 2.0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(300):
        tx.sendto(json.dumps({"A1": i, "A2": i, "A3": -i}).encode(), ("127.0.0.1", port))
    wait_for(lambda: svc.status()["subsystems"]["metrics"]["accepted"] == 300, what="300 in")
    svc.tables["metrics"]["workers"] = 3
    svc.config_path.write_text(toml_dumps(svc.tables))
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    assert svc.status()["subsystems"]["metrics"]["workers"] == 3
    for i in range(300, 400):
        tx.sendto(json.dumps({"A1": i, "A2": i, "A3": -i}).encode(), ("127.0.0.1", port))
    end = time.time()
    # The window a second past the last send: those are all stamped by then.
    rows = [r for r in written_through(out, end + 1.0, "2s") if r["count_type"] == "2s"]
    assert sum(r["count"] for r in rows) == 400
    assert sum(r["A1_sum"] for r in rows) == sum(range(400))
    assert "kept metrics state is for 2 workers, now 3" in svc.log()


# When the SIGTERM follows the SIGUSR2: at once (the loop may still hold it queued when it
# ends), while this run stops for the restart, once it has logged the exec (the new image
# may not have its handlers yet), and a while after (the new run).
STOP_AFTER = {
    "at once": None,
    "during the shutdown": "SIGUSR2: restarting in place",
    "at the exec": "re-executing in place",
    "after 0.3 s": 0.3,
}


@pytest.mark.parametrize("when", list(STOP_AFTER))
def test_a_stop_asked_for_around_a_restart_wins(start_service, tmp_path, when):
    svc = start_service(metrics=metrics_table(tmp_path))
    after = STOP_AFTER[when]
    os.kill(svc.pid, signal.SIGUSR2)
    if isinstance(after, str):
        wait_for(lambda: after in svc.log(), what=after, interval=0.001)
    elif after is not None:
        time.sleep(after)
    os.kill(svc.pid, signal.SIGTERM)
    try:
        code = svc.proc.wait(20)  # lost, the restart keeps it running
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the stop was lost:\n{svc.log()}") from None
    log = svc.log()
    assert code == 0, log  # killed by SIGTERM: it reached the new image before its handlers
    # Each run that started stopped cleanly once, saving its open windows.
    runs = log.count("children (config")
    assert log.count("skns.supervisor: stopped") == runs, log
    assert log.count("saved open window(s)") == runs, log
    assert "did not stop in time" not in log, log  # a child started then lost its SIGTERM


def test_a_child_is_not_the_supervisor_for_sigusr2(start_service, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path))
    (worker, *_) = svc.children("udp-worker")
    # The default action: it dies and is restarted (with the supervisor's handler inherited,
    # it would write to the supervisor's closed wake-up pipe, or to whatever reused its fd).
    os.kill(worker["pid"], signal.SIGUSR2)
    wait_for(lambda: svc.children("udp-worker")[0]["restarts"] == 1, what="a restart")
    assert "udp-worker 0 killed by SIGUSR2" in svc.log()
    assert "re-executing" not in svc.log()


def test_a_restart_rebinds_a_changed_address_and_closes_the_old(start_service, keeper, tmp_path):
    old, new = free_port(), free_port()
    svc = start_service(
        env={"NOTIFY_SOCKET": keeper.path},
        tasks={"listen": f"127.0.0.1:{old}", "soft_workers": 1, "hard_workers": 1},
    )
    wait_for(lambda: "tcp-tasks-0" in keeper.fds, what="the listener in the store")
    svc.tables["tasks"]["listen"] = f"127.0.0.1:{new}"
    svc.config_path.write_text(toml_dumps(svc.tables))
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    socket.create_connection(("127.0.0.1", new), timeout=10).close()

    # The store dropped the old socket (FDSTOREREMOVE=1) and holds the new one: nobody
    # listens on the old port any more.
    def stored_port() -> int:
        with socket.socket(fileno=os.dup(keeper.fds["tcp-tasks-0"])) as stored:
            return stored.getsockname()[1]

    wait_for(lambda: stored_port() == new, what="the new socket in the store")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old), timeout=10)
    assert "tcp-tasks-0: the kept socket is not bound to" in svc.log()
