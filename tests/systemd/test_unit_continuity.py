"""Nothing lost across ``systemctl restart`` and a kill -9 of the main process (issue 12),
but for a kill -9 the one batch per worker that the design gives up.

Inside the container, loadgen.py sends 10,000 datagrams/s from 16 sockets to the metrics
port for 8 s while a prober connects to the messenger's port every 10 ms; 2.5 s in (the
middle of a 5 s interval), the test restarts the service (or SIGKILLs its main process,
which systemd restarts). Then every datagram sent must be counted in metrics.jsonl (the 1 s
lines written since), no connect refused, no window written twice, and every 5 s line the
merge of its 1 s lines.
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

RATE, SOCKETS, SECONDS, EVENT_AT = 10_000, 16, 8.0, 2.5
LOADGEN = [
    "python3",
    "/src/tests/systemd/loadgen.py",
    "--udp=127.0.0.1:9125",
    f"--rate={RATE}",
    f"--sockets={SOCKETS}",
    f"--seconds={SECONDS}",
    "--tcp=127.0.0.1:9127",
    "--probe-interval=0.01",
]


# Events: each returns once the service serves again (systemd has it running, READY=1).


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


def measure(unit: Unit, event: Callable[[Unit, int], None]) -> dict:
    """Run the load across event; return the figures and what the output says."""
    # Start just after a 5 s edge, so that the event falls inside a 5 s interval whose first
    # 1 s windows were written before it: the interval's line must still add them up.
    longest = INTERVALS[-1]
    time.sleep((longest + 0.3 - time.time() % longest) % longest)
    before = len(unit.lines())
    pid = int(unit.show()["MainPID"])
    drops_before = udp_drops(unit)
    load = unit.machine.popen(*LOADGEN)
    time.sleep(EVENT_AT)
    outage = time.monotonic()
    event(unit, pid)
    outage = time.monotonic() - outage
    out, err = load.communicate(timeout=SECONDS + 30)
    assert load.returncode == 0, err
    result = json.loads(out)
    # The last datagram's window closes within a second of its end; then the 5 s line.
    last = math.ceil(result["ended"]) + 1
    lines = unit.wait_lines(
        lambda ls: any(x["count_type"] == "5s" and x["timestamp"] >= last for x in ls[before:]),
        "the windows after the load",
        timeout=30,
    )
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
    c = m["connects"]
    return (
        f"{name:<18} {m['sent']:>8} {m['counted']:>8} {m['lost']:>7} {m['drops']:>7} "
        f"{m['rate']:>8.0f}/s {m['outage']:>6.2f}s {c['ok']:>7} {c['refused']:>7} "
        f"{c['timeout'] + c['other']:>7} {len(m['merge_wrong']):>5}"
    )


HEADER = (
    f"{'event':<18} {'sent':>8} {'counted':>8} {'lost':>7} {'drops':>7} {'rate':>10} "
    f"{'back in':>7} {'conn ok':>7} {'refused':>7} {'failed':>7} {'merge':>5}"
)


def check(name: str, m: dict, may_lose: int = 0) -> None:
    """The figures of one event as a table row, and what must hold: at most may_lose
    datagrams lost, no connect refused or failed, every window once, every 5 s line whole."""
    row = table(name, m)
    if HEADER not in REPORT:
        REPORT.append(HEADER)
    REPORT.append(row)
    print(HEADER, row, sep="\n")
    assert m["send_failed"] == 0, row
    assert 0 <= m["lost"] <= may_lose, f"{m['lost']} of {m['sent']} lost\n{HEADER}\n{row}"
    assert m["connects"]["refused"] == 0, f"connects refused\n{HEADER}\n{row}"
    assert m["connects"]["timeout"] + m["connects"]["other"] == 0, f"connects failed\n{row}"
    assert not m["repeated"], m["repeated"]
    assert not m["merge_wrong"], "\n".join([*m["merge_wrong"], str(m["lines"])])


def test_nothing_lost_across_systemctl_restart(running: Unit) -> None:
    check("systemctl restart", measure(running, restart))


def test_nothing_lost_across_kill_9_of_the_main_process(running: Unit) -> None:
    # The bound the README gives: systemd SIGKILLs the workers once the main process is
    # gone (KillMode=mixed), each with at most one batch received but not yet published to
    # the kept memfd. Measured: 0 in most runs, 92 once (of 80,000, 2 workers, batch 1024).
    metrics = tomllib.loads(running.machine.read(CONFIG))["metrics"]
    workers = sum(c["role"] == "udp-worker" for c in running.status()["children"])
    check("kill -9 main", measure(running, kill_9), may_lose=workers * metrics["batch"])
