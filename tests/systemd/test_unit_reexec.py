"""``skns-ctl restart`` under systemd: the supervisor re-executes itself in place (the same
main pid; systemd sees RELOADING=1 then READY=1, not a restart) and loses nothing, under
the load of test_unit_continuity (10,000 datagrams/s from 16 sockets, a TCP prober)."""

from __future__ import annotations

from test_unit_continuity import AFTER_RESTART, check, measure
from unitctl import Unit


def reexec(unit: Unit, pid: int) -> None:
    assert "restarted" in unit.ctl("restart")  # returns once the new run serves


def test_skns_ctl_restart_keeps_the_main_pid_and_loses_nothing(running: Unit) -> None:
    props = running.show()
    pid, restarts = props["MainPID"], props["NRestarts"]
    m = measure(running, reexec, after=AFTER_RESTART)
    props = running.show()
    assert (props["MainPID"], props["NRestarts"]) == (pid, restarts), props
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    check("skns-ctl restart", m)
