"""Nothing lost across ``systemctl restart`` and a kill -9 of the main process (issue 12),
but for a kill -9 the one batch per worker that the design gives up.

Inside the container, loadgen.py sends 10,000 datagrams/s from 16 sockets to the metrics
port while a prober connects to the messenger's port every 10 ms; 1.5-3.5 s into a 5 s
interval (its first 1 s windows, with load in them, written before), the test restarts
the service (or SIGKILLs its main process, which systemd restarts), and the load runs on
for a few seconds past the time the service is usually back. Then every datagram sent must
be counted in metrics.jsonl (the 1 s lines written since), no connect refused, no window
written twice, and every 5 s line the merge of its 1 s lines.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from collections.abc import Callable

from unitctl import (
    CONFIG,
    INTERVALS,
    REPORT,
    UNIT,
    Unit,
    base_lines,
    merge_mismatches,
    repeated_windows,
)

RATE, SOCKETS = 10_000, 16
# The event comes EVENT_FROM to EVENT_TO seconds into a 5 s interval (so that its line must
# add up 1 s windows of both sides), at least LEAD after the load began (so that the windows
# before it hold load); the load runs on for the event's after= seconds.
EVENT_FROM, EVENT_TO, LEAD = 1.5, 3.5, 1.5
LOADGEN = [
    "python3",
    "/src/tests/systemd/loadgen.py",
    "--udp=127.0.0.1:9125",
    f"--rate={RATE}",
    f"--sockets={SOCKETS}",
    "--tcp=127.0.0.1:9127",
    "--probe-interval=0.01",
    "--control=/run/skns/control.sock",
    "--probe-timeout=10",  # a status asked just after a kill -9 waits out RestartSec=2s
]


# Events: each returns once the service serves again (systemd has it running, READY=1).
# The load runs on after each for its AFTER_ seconds: back in measured 1.2 s after a restart,
# 3.1 s after a kill -9 (RestartSec=2s), so 2-3 s of live load at the least.
AFTER_RESTART, AFTER_KILL = 3.5, 5.5


def restart(unit: Unit, pid: int) -> None:
    unit.systemctl("restart", UNIT)  # Type=notify: returns on READY=1
    unit.wait_running(not_pid=pid)


def kill_9(unit: Unit, pid: int) -> None:
    unit.machine.run("kill", "-9", str(pid))
    unit.wait_running(not_pid=pid, timeout=30)


def udp_drops(unit: Unit, port: int = 9125) -> dict[str, int]:
    """The kernel's drop counter of each UDP socket bound to port, by socket inode."""
    drops = {}
    for row in unit.machine.run("cat", "/proc/net/udp").stdout.splitlines()[1:]:
        fields = row.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            drops[fields[9]] = int(fields[-1])
    return drops


def measure(unit: Unit, event: Callable[[Unit, int], None], after: float) -> dict:
    """Run the load across event, on for ``after`` seconds past it (more than the service
    takes to be back: it must take live traffic again); the figures and what the output
    says."""
    longest = INTERVALS[-1]
    before = len(unit.lines())
    pid = int(unit.show()["MainPID"])
    drops_before = udp_drops(unit)
    now = time.time()
    event_at = now + LEAD
    phase = event_at % longest
    if phase < EVENT_FROM:
        event_at += EVENT_FROM - phase
    elif phase > EVENT_TO:
        event_at += longest - phase + EVENT_FROM
    load = unit.machine.popen(*LOADGEN, f"--seconds={event_at - now + after:.3f}")
    time.sleep(max(0.0, event_at - time.time()))
    outage = time.monotonic()
    event(unit, pid)
    outage = time.monotonic() - outage
    out, err = load.communicate(timeout=event_at - now + after + 30)
    assert load.returncode == 0, err
    result = json.loads(out)
    # The last datagram's window closes within a second of its end: every 1 s line up to
    # it, and every 5 s line that ends by then (the merges checked below).
    last = math.ceil(result["ended"]) + 1
    merged = last // longest * longest

    def through_last(ls: list[dict]) -> bool:
        new = ls[before:]
        return any(x["timestamp"] >= last for x in base_lines(new)) and any(
            x["count_type"] == f"{longest:g}s" and x["timestamp"] >= merged for x in new
        )

    lines = unit.wait_lines(through_last, "the windows after the load", timeout=30)
    counted = sum(x["count"] for x in base_lines(lines[before:]))
    # Only sockets open at the end count: a socket closed by the restart took its figure along.
    drops = sum(n - drops_before.get(inode, 0) for inode, n in udp_drops(unit).items())
    return {
        **result,
        "rate": result["sent"] / (result["ended"] - result["started"]),
        "outage": outage,
        "counted": counted,
        "lost": result["sent"] - counted,
        "drops": drops,
        "merge_wrong": merge_mismatches(lines, start=before),
        "lines": [(x["timestamp"], x["count_type"], x["count"]) for x in lines[before:]],
        "repeated": repeated_windows(lines),
    }


def table(name: str, m: dict) -> str:
    c, s = m["connects"], m["statuses"]
    return (
        f"{name:<18} {m['sent']:>8} {m['counted']:>8} {m['lost']:>7} {m['drops']:>7} "
        f"{m['rate']:>8.0f}/s {m['outage']:>6.2f}s {c['ok']:>7} {c['refused']:>7} "
        f"{c['timeout'] + c['other']:>7} {s['ok']:>6} {s['refused']:>7} "
        f"{s['cut'] + s['timeout'] + s['other']:>6} {len(m['merge_wrong']):>5}"
    )


HEADER = (
    f"{'event':<18} {'sent':>8} {'counted':>8} {'lost':>7} {'drops':>7} {'rate':>10} "
    f"{'back in':>7} {'conn ok':>7} {'refused':>7} {'failed':>7} {'status':>6} "
    f"{'refused':>7} {'failed':>6} {'merge':>5}"
)


def check(name: str, m: dict, may_lose: int = 0, may_cut: int = 0) -> None:
    """The figures of one event as a table row, and what must hold: at most may_lose
    datagrams lost, no connect refused or failed, no status request refused (the control
    socket is kept too) and at most may_cut cut by a kill, every window once, every 5 s
    line whole."""
    row = table(name, m)
    if HEADER not in REPORT:
        REPORT.append(HEADER)
    REPORT.append(row)
    print(HEADER, row, sep="\n")
    assert m["send_failed"] == 0, row
    assert 0 <= m["lost"] <= may_lose, f"{m['lost']} of {m['sent']} lost\n{HEADER}\n{row}"
    assert m["connects"]["refused"] == 0, f"connects refused\n{HEADER}\n{row}"
    assert m["connects"]["timeout"] + m["connects"]["other"] == 0, f"connects failed\n{row}"
    statuses = m["statuses"]
    assert statuses["ok"] > 0 and statuses["refused"] == 0, f"status refused\n{HEADER}\n{row}"
    assert statuses["timeout"] + statuses["other"] == 0, f"status failed\n{HEADER}\n{row}"
    assert statuses["cut"] <= may_cut, f"status cut\n{HEADER}\n{row}"
    assert not m["repeated"], m["repeated"]
    assert not m["merge_wrong"], "\n".join([*m["merge_wrong"], str(m["lines"])])


def test_nothing_lost_across_systemctl_restart(running: Unit) -> None:
    check("systemctl restart", measure(running, restart, after=AFTER_RESTART))


def test_nothing_lost_across_kill_9_of_the_main_process(running: Unit) -> None:
    # The bound the README gives: systemd SIGKILLs the workers once the main process is
    # gone (KillMode=mixed), each with at most one batch received but not yet published to
    # the kept memfd. Measured: 0 in most runs, 92 once (of 80,000, 2 workers, batch 1024).
    metrics = tomllib.loads(running.machine.read(CONFIG))["metrics"]
    workers = sum(c["role"] == "udp-worker" for c in running.status()["children"])
    m = measure(running, kill_9, after=AFTER_KILL)
    # One status request may have been taken by the main process killed.
    check("kill -9 main", m, may_lose=workers * metrics["batch"], may_cut=1)
