"""``skns-ctl restart`` under systemd: the supervisor re-executes itself in place (the same
main pid; systemd sees RELOADING=1 then READY=1, not a restart) and loses nothing, under
the load of test_unit_continuity (10,000 datagrams/s from 16 sockets, a TCP prober)."""

from __future__ import annotations

import json
import math
import time

from test_unit_continuity import LOADGEN
from test_unit_lifecycle import wait_lines
from unitctl import Unit, base_lines, merge_mismatches, repeated_windows


def test_skns_ctl_restart_keeps_the_main_pid_and_loses_nothing(running: Unit) -> None:
    props = running.show()
    pid, restarts = props["MainPID"], props["NRestarts"]
    before = len(running.lines())
    load = running.machine.popen(*LOADGEN)
    time.sleep(2.5)
    assert "restarted" in running.ctl("restart")  # returns once the new run serves
    props = running.show()
    assert (props["MainPID"], props["NRestarts"]) == (pid, restarts), props
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    out, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    result = json.loads(out)
    last = math.ceil(result["ended"]) + 1
    wait_lines(
        running,
        lambda ls: any(x["count_type"] == "5s" and x["timestamp"] >= last for x in ls[before:]),
        "the windows after the load",
        timeout=30,
    )
    lines = running.lines()
    counted = sum(x["count"] for x in base_lines(lines[before:]))
    print(f"\nskns-ctl restart: sent {result['sent']}, counted {counted}, {result['connects']}")
    assert counted == result["sent"]
    assert result["connects"]["refused"] == 0, result["connects"]
    assert not merge_mismatches(lines, start=before)
    assert not repeated_windows(lines)
