"""``sudo make install``, ``systemctl start/reload/stop``, ``make uninstall``, on a pretend machine.

Run as root inside a private mount namespace
(``unshare --mount python machine.py REPO WORK STAGED``): it puts a copy of /etc over /etc,
and directories of WORK over /usr/local, /var/lib and /run, so the real install (DESTDIR
empty, PREFIX=/usr/local) runs every step for real, systemd-sysusers, systemd-tmpfiles and
systemd-sysctl included, and touches nothing outside WORK. The machine starts with STAGED
(a ``make install DESTDIR=STAGED`` tree) unpacked on it, as a package would be: so the venv
built under a DESTDIR is the one that runs here, at its final path. Then, in a
private network namespace as well, it starts the installed service with the installed config
the way systemd runs the unit: RuntimeDirectory=, WorkingDirectory=, ExecStartPre= (if any)
and ExecStart= as User=skns inside the unit's sandbox (sandbox.py), $NOTIFY_SOCKET, reload by
ExecReload=, stop by SIGTERM to the main process. Prints ``machine ok`` when every step held.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sandbox import unit_settings  # this script's directory is first on sys.path

HERE = Path(__file__).resolve().parent
UNIT = Path("/etc/systemd/system/skns-metrics.service")
CONFIG = Path("/etc/skns/config.toml")
STATE = Path("/var/lib/skns")
RUNTIME = Path("/run/skns")
CLONE_NEWNET = 0x40000000
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")
# sandbox.py runs as skns: on the installed python, not on the test's (which may live in /root).
VENV_PYTHON = "/usr/local/lib/skns/venv/bin/python"
NOTIFY = Path("/run/notify")  # on the pretend /run: the service's user can reach it


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=240, **kwargs
    )
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def pretend_machine(work: Path, staged: Path) -> None:
    """Bind WORK's directories over the system ones; stop short if any mount did not take."""
    run("cp", "-a", "/etc", work / "etc")
    run("cp", "-a", f"{staged}/etc/.", work / "etc")
    run("cp", "-a", f"{staged}/usr/local", work / "usr-local")
    # Unpacked just now: newer than the sources, so make install keeps this venv.
    os.utime(work / "usr-local/lib/skns/venv/.skns-built")
    (work / "rmem_max").write_text(RMEM_MAX.read_text())
    binds = {work / "etc": "/etc", work / "usr-local": "/usr/local", work / "var-lib": "/var/lib"}
    for source, target in binds.items():
        source.mkdir(exist_ok=True)
        (source / ".skns-machine").write_text("")
        run("mount", "--bind", source, target)
        assert Path(target, ".skns-machine").exists(), f"{target} is not the pretend one"
    run("mount", "--bind", work / "rmem_max", RMEM_MAX)
    run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")


def as_skns(*command: str | Path) -> list[str]:
    """The command as the unit runs it: its file-system view, User=skns, its sandbox."""
    sandbox = [VENV_PYTHON, str(HERE / "sandbox.py"), "--filesystem", "--user", str(UNIT), "--"]
    return [*sandbox, *(str(c) for c in command)]


class Notify:
    """What systemd would read on $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)  # the service runs as skns
        self.sock.settimeout(0.2)

    def wait(self, line: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if line in self.sock.recv(4096).decode().splitlines():
                    return
            except TimeoutError:
                assert proc.poll() is None, f"service exited {proc.returncode} before {line}"
        raise AssertionError(f"no {line} in {timeout}s")


def status() -> dict:
    # As root, from the state directory (no config.toml there): the installed config is used.
    return json.loads(run("/usr/local/bin/skns-ctl", "status", "--json", cwd=STATE).stdout)


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def install(repo: Path) -> None:
    out = run("make", "-C", repo, "--no-print-directory", "install").stdout
    assert "systemd is not running as init here" in out, out
    assert " -m venv " not in out, "the unpacked venv was rebuilt"
    skns = pwd.getpwnam("skns")
    assert skns.pw_uid < 1000 and skns.pw_dir == str(STATE)
    state = STATE.stat()
    assert (state.st_uid, state.st_mode & 0o777) == (skns.pw_uid, 0o750)
    config = CONFIG.stat()
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, skns.pw_gid, 0o640)
    assert int(RMEM_MAX.read_text()) == 33554432, "systemd-sysctl did not raise rmem_max"
    # The commands run at their final path, by their own shebangs.
    assert "check-config" in run("/usr/local/bin/skns-ctl", "--help").stdout
    if shutil.which("systemd-analyze"):
        verify = run("systemd-analyze", "verify", "--man=no", UNIT)
        assert verify.stdout + verify.stderr == "", verify.stderr


def serve(work: Path) -> None:
    """Start, look, reload, stop: the unit's lifecycle, with systemd's part played here."""
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    run("ip", "link", "set", "lo", "up")  # the installed config's fixed ports, privately
    skns = pwd.getpwnam("skns")
    RUNTIME.mkdir(mode=0o755)
    os.chown(RUNTIME, skns.pw_uid, skns.pw_gid)
    unit = unit_settings(UNIT)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "NOTIFY_SOCKET": str(NOTIFY),
        "WATCHDOG_USEC": "30000000",
    }
    # The emulated view is in force: a directory skns owns outside the state and runtime
    # directories is read-only (EROFS, not EACCES), /tmp is private.
    owned = Path("/var/lib/skns-owned")
    owned.mkdir()
    os.chown(owned, skns.pw_uid, skns.pw_gid)
    view = (
        "import errno, os; from pathlib import Path\n"
        "def write(p):\n"
        "    try: Path(p, '.probe').write_text(''); Path(p, '.probe').unlink(); return 0\n"
        "    except OSError as e: return e.errno\n"
        "assert os.getuid() != 0 and not os.listdir('/tmp')\n"
        "assert [write(p) for p in ('/var/lib/skns', '/run/skns', '/tmp')] == [0, 0, 0]\n"
        f"assert write('{owned}') == errno.EROFS, write('{owned}')\n"
    )
    run(*as_skns(VENV_PYTHON, "-c", view), cwd=STATE, env=env)
    owned.rmdir()
    for line in unit.get("ExecStartPre", []):
        run(*as_skns(*line.split()), cwd=STATE, env=env)
    notify = Notify(NOTIFY)
    log = (work / "service.log").open("wb")
    proc = subprocess.Popen(
        as_skns(*unit["ExecStart"][0].split()), cwd=STATE, env=env, stdout=log, stderr=log
    )
    try:
        notify.wait("READY=1", proc)
        first = status()
        assert first["service"]["pid"] == proc.pid, "the main process must be the supervisor"
        assert all(c["up"] for c in first["children"]), first["children"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(10):
                udp.sendto(b'{"A1": 1, "A2": 2, "A3": 3}', ("127.0.0.1", 9125))
        wait_for(lambda: status()["subsystems"]["metrics"]["accepted"] >= 10, "datagrams counted")
        # systemctl reload: validate as skns, then SIGHUP the main process.
        run(*as_skns(*unit["ExecReload"][0].split()), cwd=STATE, env=env)
        proc.send_signal(signal.SIGHUP)
        notify.wait("RELOADING=1", proc)
        notify.wait("READY=1", proc)
        # systemctl stop (KillMode=mixed): SIGTERM to the main process only.
        proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1", proc)
        assert proc.wait(timeout=20) == 0
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and owned_by(p, skns)]
        assert not left, f"processes of skns outlive the service: {left}"
        # What the service wrote is for it and its group only (metrics, state, SQLite).
        shown = [p for p in STATE.rglob("*") if p.lstat().st_mode & 0o007]
        assert not shown, f"readable by everyone: {shown}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def owned_by(proc_dir: Path, user: pwd.struct_passwd) -> bool:
    """A process of ``user`` in this PID namespace (a container's skns, e.g. the systemd
    tests' booted machine with the same users, is not this service's)."""
    try:
        return proc_dir.stat().st_uid == user.pw_uid and os.readlink(
            proc_dir / "ns" / "pid"
        ) == os.readlink("/proc/self/ns/pid")
    except (FileNotFoundError, ProcessLookupError):
        return False


def uninstall(repo: Path) -> None:
    out = run("make", "-C", repo, "--no-print-directory", "uninstall").stdout
    assert "make purge" in out, out
    for gone in (
        UNIT,
        "/usr/local/lib/skns",
        "/usr/local/bin/skns-ctl",
        "/etc/sysctl.d/60-skns.conf",
    ):
        assert not os.path.lexists(gone), gone
    assert CONFIG.exists() and STATE.exists()
    run("make", "-C", repo, "--no-print-directory", "purge")
    assert not CONFIG.parent.exists() and not STATE.exists()


def main(repo: Path, work: Path, staged: Path) -> int:
    pretend_machine(work, staged)
    install(repo)
    serve(work)
    uninstall(repo)
    print("machine ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(Path(arg) for arg in sys.argv[1:4])))
