"""The operator's path under a real systemd: install, enable --now, status, reload, restart,
a crash, a hung supervisor (watchdog), a bad config, stop, uninstall.

Each test sets up the state it needs through the fixtures (installed, running with 1 s
windows), so the order of the tests does not matter; uninstall comes last (conftest.py moves
it behind every other test of the directory) only to save a reinstall.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from nspawn import Container
from unitctl import CONFIG, OUTPUT, UNIT, Unit, base_lines, repeated_windows

from helpers import wait_for

DROP_IN = f"/etc/systemd/system/{UNIT}.d/test.conf"
LOADGEN = "/src/tests/systemd/loadgen.py"


def send(machine: Container, count: int) -> None:
    """count datagrams to the metrics port from inside, within about a second."""
    rate = max(count, 100)
    machine.run(
        "python3",
        LOADGEN,
        "--udp=127.0.0.1:9125",
        f"--rate={rate}",
        "--sockets=1",
        f"--seconds={count / rate}",
    )


def test_install_lays_out_a_unit_systemd_accepts(machine: Container, staged_install: Path) -> None:
    unit = Unit(machine)
    unit.unpack(staged_install)
    out = unit.make("install")
    assert " -m venv " not in out, "the unpacked venv was rebuilt"
    assert unit.installed()
    props = unit.show()
    assert props["LoadState"] == "loaded", props
    if props["ActiveState"] != "active":
        assert "systemctl enable --now skns-metrics" in out, out
    # systemd's own checker: unknown keys, bad paths, an ExecStart= that is not executable.
    verify = machine.run("systemd-analyze", "verify", UNIT, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert machine.run("id", "-u", "skns").stdout.strip().isdigit()
    machine.run("skns-ctl", "check-config", CONFIG)


def test_enable_now_reaches_active_only_when_every_child_is_up(unit: Unit) -> None:
    unit.systemctl("disable", "--now", UNIT)
    unit.configure()
    unit.systemctl("reset-failed", UNIT, check=False)
    # Type=notify: enable --now returns once the supervisor sent READY=1.
    unit.systemctl("enable", "--now", UNIT)
    props = unit.show()
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert props["UnitFileState"] == "enabled", props
    status = unit.status()
    assert status["service"]["state"] == "running", status["service"]
    assert all(c["up"] for c in status["children"]), status["children"]
    assert "children up" in props["StatusText"], props


def test_skns_ctl_status_inside(running: Unit) -> None:
    props = running.show()
    text = running.ctl("status")
    assert f"running, pid {props['MainPID']}" in text, text
    for role in ("udp-worker 0", "executor-router 0", "messenger 0", "tasks 0"):
        assert role in text, text
    status = running.status()
    assert status["service"]["pid"] == int(props["MainPID"]), status["service"]


def test_datagrams_reach_metrics_jsonl(running: Unit) -> None:
    before = len(running.lines())
    send(running.machine, 40)

    def counted(lines: list[dict]) -> bool:
        return sum(x["count"] for x in base_lines(lines[before:])) >= 40

    lines = running.wait_lines(counted, "40 datagrams counted")
    new = [x for x in base_lines(lines[before:]) if x["count"]]
    assert sum(x["count"] for x in new) == 40, new
    # loadgen's datagram i is {"A1": 1, "A2": i + 1, "A3": -i} for i < 997.
    assert sum(x["A1_sum"] for x in new) == 40, new
    assert max(x["A2_max"] for x in new) == 40, new
    assert min(x["A3_min"] for x in new) == -39, new
    # The 5 s interval follows, merged from the 1 s windows.
    running.wait_lines(lambda ls: any(x["count_type"] == "5s" for x in ls[before:]), "a 5s line")


def test_reload_applies_a_change_in_place_and_refuses_a_bad_file(running: Unit) -> None:
    machine, pid = running.machine, running.show()["MainPID"]
    good = machine.read(CONFIG)
    tasks_off = re.sub(r"(?ms)^(\[tasks\]\s*\nenabled = )true", r"\1false", good)
    assert tasks_off != good
    since = running.now()
    try:
        machine.write(CONFIG, tasks_off)
        running.systemctl("reload", UNIT)
        roles = lambda: {c["role"] for c in running.status()["children"]}  # noqa: E731
        wait_for(roles, 20, "the tasks server gone", until=lambda r: "tasks" not in r, interval=0.2)
        assert f"reloading {CONFIG}" in running.journal(since=since)
        # ExecReload= checks the file first: a broken one fails the reload, the service runs on.
        machine.write(CONFIG, good + "\n[metrics\n")
        assert machine.run("systemctl", "reload", UNIT, check=False).returncode != 0
        props = running.show()
        assert (props["ActiveState"], props["MainPID"]) == ("active", pid), props
    finally:
        machine.write(CONFIG, good)
        running.systemctl("reload", UNIT)
    running.wait(lambda p: p["SubState"] == "running", "reloaded")
    assert running.show()["MainPID"] == pid
    assert "tasks 0" in running.ctl("status")


def test_restart_starts_a_new_main_process_and_keeps_windows_unique(running: Unit) -> None:
    old = int(running.show()["MainPID"])
    restarts = running.show()["NRestarts"]
    before = len(running.lines())
    running.systemctl("restart", UNIT)
    props = running.wait_running(not_pid=old)
    assert props["NRestarts"] == restarts, props  # asked for: not counted as a failure
    running.wait_lines(lambda ls: len(base_lines(ls[before:])) >= 3, "windows after the restart")
    assert not repeated_windows(running.lines())


def test_kill_9_of_the_main_process_is_restarted_by_systemd(running: Unit) -> None:
    props = running.show()
    old, restarts = int(props["MainPID"]), int(props["NRestarts"])
    since = running.now()
    running.machine.run("kill", "-9", str(old))
    props = running.wait_running(not_pid=old, timeout=30)
    assert int(props["NRestarts"]) == restarts + 1, props
    assert "status=9/KILL" in running.journal(since=since)
    assert running.status()["service"]["pid"] == int(props["MainPID"])


def test_watchdog_kills_and_restarts_a_hung_supervisor(running: Unit) -> None:
    machine = running.machine
    # A short watchdog, a short wait for the abort and a short RestartSec keep this brief.
    machine.write(DROP_IN, "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=5s\nRestartSec=100ms\n")
    passed = False
    try:
        running.systemctl("daemon-reload")
        running.systemctl("restart", UNIT)
        props = running.wait_running()
        old, restarts = int(props["MainPID"]), int(props["NRestarts"])
        # Healthy, it pings in time: still the same process after more than a watchdog period.
        time.sleep(2.5)
        assert running.show()["MainPID"] == str(old)
        since = running.now()
        machine.run("kill", "-STOP", str(old))
        props = running.wait_running(not_pid=old, timeout=40)
        assert int(props["NRestarts"]) == restarts + 1, props
        assert "Watchdog timeout" in running.journal(since=since)
        passed = True
    finally:
        machine.run("rm", "-rf", DROP_IN.rsplit("/", 1)[0])
        running.systemctl("daemon-reload")
        # Passed, the service runs healthy under the unit as installed again (the 2 s
        # watchdog it was started with only makes it ping more often): no restart needed.
        # Failed, it may be stopped or half restarted.
        if not passed:
            running.systemctl("restart", UNIT)
    running.wait_running()


def test_bad_config_fails_once_and_is_not_retried(running: Unit) -> None:
    machine = running.machine
    good = machine.read(CONFIG)
    try:
        machine.write(CONFIG, good.replace("[metrics]\n", '[metrics]\nwindow = "ten"\n', 1))
        running.systemctl("reset-failed", UNIT)
        since = running.now()
        assert running.machine.run("systemctl", "restart", UNIT, check=False).returncode != 0
        # No need to wait out RestartSec=2s for a retry: systemd decides when the process
        # exits, and a retry it means to make shows at once as activating/auto-restart (seen
        # with RestartPreventExitStatus= emptied by a drop-in). Failed is final: nothing
        # else starts this unit.
        props = running.show()
        assert (props["ActiveState"], props["SubState"]) == ("failed", "failed"), props
        assert props["NRestarts"] == "0", props
        assert (props["Result"], props["ExecMainStatus"]) == ("exit-code", "2"), props
        # One start, one clear message naming the file and what is wrong with it.
        journal = running.journal(since=since)
        assert journal.count(f"skns-metrics: {CONFIG}: ") == 1, journal
        assert journal.count("status=2/INVALIDARGUMENT") == 1, journal
    finally:
        machine.write(CONFIG, good)
        running.systemctl("reset-failed", UNIT, check=False)
        running.systemctl("restart", UNIT)


def test_journal_filters_by_role(running: Unit) -> None:
    """The README's ``journalctl -u skns-metrics ROLE=udp-worker``: every process's records
    carry ROLE= (children ROLE_INDEX= too)."""
    since = running.now()
    running.systemctl("restart", UNIT)
    running.wait_running()

    def records(*match: str) -> list[dict]:
        out = running.machine.run(
            "journalctl", "-u", UNIT, f"--since=@{since:.6f}", "-o", "json", *match
        ).stdout
        return [json.loads(line) for line in out.splitlines()]

    workers = records("ROLE=udp-worker")
    assert workers, running.journal(since=since)
    assert {r["ROLE"] for r in workers} == {"udp-worker"}
    assert any(r["MESSAGE"].startswith("udp-worker 0: listening on") for r in workers), workers
    assert all(r["MESSAGE"].startswith(f"udp-worker {r['ROLE_INDEX']}: ") for r in workers)
    supervisor = records("ROLE=supervisor")
    up = [r for r in supervisor if "children up" in r["MESSAGE"]]
    assert [r["_PID"] for r in up] == [running.show()["MainPID"]], supervisor


def test_state_files_are_for_the_service_and_its_group_only(running: Unit) -> None:
    """UMask=0027 and skns's own umask: no file under /var/lib/skns is world-readable."""
    running.wait_lines(bool, "a first window")
    out = running.machine.run("find", "/var/lib/skns", "-printf", "%m %y %u:%g %p\\n").stdout
    rows = [line.split(" ", 3) for line in out.splitlines()]
    assert any(path.endswith("/metrics.jsonl") for *_, path in rows), out
    assert any(path.endswith("/messenger.sqlite3") for *_, path in rows), out
    for mode, kind, owner, path in rows:
        limit = 0o750 if kind == "d" else 0o640
        assert int(mode, 8) & ~limit == 0, f"{path}: {mode}"
        assert owner == "skns:skns", f"{path}: {owner}"


def test_stop_ends_every_process_cleanly(running: Unit) -> None:
    since = running.now()
    running.systemctl("stop", UNIT)
    props = running.show()
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
    assert props["ExecMainStatus"] == "0", props
    assert running.machine.run("pgrep", "-f", "skns-metrics", check=False).returncode == 1
    assert "stopped" in running.journal(since=since)


def test_uninstall_removes_the_service_and_keeps_config_and_data(unit: Unit) -> None:
    unit.ensure_running()
    out = unit.make("uninstall")
    machine = unit.machine
    assert unit.show()["LoadState"] == "not-found"
    assert machine.run("pgrep", "-f", "skns-metrics", check=False).returncode == 1
    for gone in ("usr/local/lib/skns", "usr/local/bin/skns-ctl", f"etc/systemd/system/{UNIT}"):
        assert not (machine.root / gone).exists(), gone
    assert (machine.root / CONFIG.lstrip("/")).exists(), out
    assert (machine.root / OUTPUT.lstrip("/")).exists(), out
