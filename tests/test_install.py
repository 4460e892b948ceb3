"""``make install`` / ``make uninstall`` / ``make purge`` into a DESTDIR, and what they lay out.

One install (``staged_install`` in conftest.py, shared with tests/systemd) serves the checks
that only read the tree; the upgrade and uninstall test changes a copy of it. The install
builds a real venv and pip-installs the checkout into it (15-60 s).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from helpers import REPO, make

HERE = Path(__file__).resolve().parent
PREFIX = "/usr/local"
VENV = f"{PREFIX}/lib/skns/venv"
UNIT = "etc/systemd/system/skns-metrics.service"
CONFIG = "etc/skns/config.toml"
SYSCTL = "etc/sysctl.d/60-skns.conf"

# Everything install lays out besides the venv, with its mode ...
FILES = {
    UNIT: 0o644,
    "etc/sysusers.d/skns.conf": 0o644,
    "etc/tmpfiles.d/skns.conf": 0o644,
    SYSCTL: 0o644,
    "etc/skns/config.toml.dist": 0o644,
    CONFIG: 0o640,
}
# ... and the commands on the PATH, linked to the venv's.
LINKS = {f"usr/local/bin/{cmd}": f"{VENV}/bin/{cmd}" for cmd in ("skns-metrics", "skns-ctl")}
# Directories a real system has anyway: uninstall leaves them.
SYSTEM_DIRS = {
    "usr/local/bin",
    "usr/local/lib",
    "etc/systemd/system",
    "etc/sysusers.d",
    "etc/tmpfiles.d",
    "etc/sysctl.d",
}


def load_sandbox() -> ModuleType:
    spec = importlib.util.spec_from_file_location("skns_test_sandbox", HERE / "sandbox/sandbox.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sandbox = load_sandbox()
needs_seccomp = pytest.mark.skipif(
    platform.machine() != "x86_64" or ctypes.util.find_library("seccomp") is None,
    reason="the sandbox emulation (tests/sandbox) needs libseccomp on x86_64",
)


def paths(root: Path) -> tuple[set[str], set[str]]:
    """(files and symlinks, directories) under root, relative to it."""
    files: set[str] = set()
    dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        for name in dirnames:
            (files if (Path(dirpath) / name).is_symlink() else dirs).add(str(base / name))
        files.update(str(base / name) for name in filenames)
    return files, dirs


def inside(root: Path, path: Path) -> Path:
    """Where an absolute path of the installed system is in the DESTDIR tree, symlinks followed
    inside the tree (as systemd-analyze --root does); host paths outside PREFIX stay as they are.
    """
    if not str(path).startswith(PREFIX + "/"):
        return path
    here = root / str(path).lstrip("/")
    while here.is_symlink():
        target = Path(os.readlink(here))
        here = inside(root, target) if target.is_absolute() else here.parent / target
    return here


def installed_python(root: Path) -> Path:
    return root / VENV.lstrip("/") / "bin/python"


def run_installed(root: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed venv's python as the service would, with nothing of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [str(installed_python(root)), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def seconds(value: str) -> float:
    """A systemd time span of the forms this unit uses: "20s", "1min 30s", "2min"."""
    units = {"min": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s)?", value)
    assert parts, value
    return sum(float(n) * units[u or "s"] for n, u in parts)


@pytest.fixture(scope="module")
def root(staged_install: Path) -> Path:
    return staged_install


@pytest.fixture(scope="module")
def cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unrelated working directory, for a relative path to show up against."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="module")
def settings(root: Path, cwd: Path) -> dict:
    """The installed config as the installed package reads it."""
    code = (
        "import json, sys, skns.config; "
        "print(json.dumps(skns.config.load(sys.argv[1]).as_dict(), default=str))"
    )
    proc = run_installed(root, "-c", code, root / CONFIG, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_install_lays_out_every_file(root: Path) -> None:
    files, dirs = paths(root)
    venv = VENV.lstrip("/")
    assert {f for f in files if not f.startswith(venv + "/")} == set(FILES) | set(LINKS)
    for name, mode in FILES.items():
        assert (root / name).stat().st_mode & 0o777 == mode, name
    for name, target in LINKS.items():
        assert os.readlink(root / name) == target
        assert os.access(inside(root, Path(target)), os.X_OK)
    assert (root / venv / "pyvenv.cfg").is_file() and (root / venv / ".skns-built").is_file()
    assert not any(d.endswith(("venv.new", "venv.old")) for d in dirs), "staging venv left over"


def test_venv_points_at_its_final_path_only(root: Path) -> None:
    venv = root / VENV.lstrip("/")
    for script in ("skns-ctl", "skns-metrics"):
        first = (venv / "bin" / script).read_text().splitlines()[0]
        assert first == f"#!{VENV}/bin/python", first
    # Nothing in the venv, byte-compiled files included, remembers where it was built.
    staged = str(root).encode()
    leaks = [
        str(p.relative_to(venv))
        for p in venv.rglob("*")
        if p.is_file() and not p.is_symlink() and staged in p.read_bytes()
    ]
    assert leaks == []
    pycs = list(venv.glob("lib/python3*/site-packages/skns/__pycache__/config.*.pyc"))
    assert pycs, "skns is not byte-compiled"
    assert f"{VENV}/lib/".encode() in pycs[0].read_bytes()


def test_package_is_installed_not_linked_to_the_checkout(root: Path, tmp_path: Path) -> None:
    proc = run_installed(root, "-c", "import skns; print(skns.__file__)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    location = Path(proc.stdout.strip())
    assert location.is_relative_to(root / VENV.lstrip("/")), location
    assert location.parent.name == "skns" and location.parent.parent.name == "site-packages"


@pytest.mark.skipif(
    not (REPO / "daemon/skns/ctl.py").exists(), reason="skns.ctl is not in this checkout yet"
)
def test_installed_skns_ctl_runs(root: Path, tmp_path: Path) -> None:
    ctl = root / VENV.lstrip("/") / "bin/skns-ctl"
    proc = run_installed(root, ctl, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "check-config" in proc.stdout
    # What ExecReload= runs before every reload.
    proc = run_installed(root, ctl, "check-config", root / CONFIG, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installed_config_is_the_repository_one_with_system_paths(root: Path) -> None:
    installed = (root / CONFIG).read_text()
    assert installed == (root / "etc/skns/config.toml.dist").read_text()
    body = [line for line in installed.splitlines() if not line.startswith("# Installed by")]
    body = body[2:]  # the rest of the three-line header
    source = (REPO / "config.toml").read_text().splitlines()
    assert len(body) == len(source)
    for mine, theirs in zip(body, source, strict=True):
        if '"./var' in theirs:
            assert "./var" not in mine and re.search(r'"/(var/lib|run)/skns[/"]', mine), mine
        else:
            assert mine == theirs


def test_installed_config_paths(settings: dict, cwd: Path) -> None:
    assert settings["service"]["state_dir"] == "/var/lib/skns"
    assert settings["service"]["control_socket"] == "/run/skns/control.sock"
    assert settings["metrics"]["output"] == "/var/lib/skns/metrics.jsonl"
    # No path is left relative: none was resolved against the (unrelated) working directory.
    text = json.dumps(settings)
    assert str(cwd) not in text and "./var" not in text


def test_sysctl_drop_in_covers_the_configured_buffer(root: Path, settings: dict) -> None:
    values = dict(
        (k.strip(), v.strip())
        for k, _, v in (
            line.partition("=")
            for line in (root / SYSCTL).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    )
    assert set(values) == {"net.core.rmem_max"}
    assert int(values["net.core.rmem_max"]) >= settings["metrics"]["recv_buffer_bytes"]


def test_unit_runs_the_installed_commands(root: Path, settings: dict) -> None:
    unit = sandbox.unit_settings(root / UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [f"{PREFIX}/bin/skns-metrics --config /etc/skns/config.toml"]
    check = f"{PREFIX}/bin/skns-ctl check-config /etc/skns/config.toml"
    assert unit["ExecReload"][0] == check
    # A bad config is not retried: the main process itself refuses it with exit status 2,
    # which RestartPreventExitStatus= covers (a failing ExecStartPre= it does not).
    assert "ExecStartPre" not in unit
    assert "2" in unit["RestartPreventExitStatus"][-1].split()
    assert unit["User"] == ["skns"] and unit["KillMode"] == ["mixed"]
    assert "WatchdogSec" in unit
    # systemd must not SIGKILL what the supervisor is still stopping gracefully.
    assert seconds(unit["TimeoutStopSec"][-1]) > settings["service"]["graceful_timeout"]
    for key in ("ExecStart", "ExecReload"):
        for line in unit[key]:
            command = line.split()[0].lstrip("-+!@:")
            assert command.startswith("/"), line
            assert os.access(inside(root, Path(command)), os.X_OK), f"{key}: {command}"


def test_installed_service_refuses_a_bad_config_with_exit_status_2(
    root: Path, tmp_path: Path
) -> None:
    """What systemd's RestartPreventExitStatus=2 relies on, and the message the journal gets."""
    bad = tmp_path / "config.toml"
    bad.write_text("[metrics]\nwindow = -1\n")
    unit = sandbox.unit_settings(root / UNIT)
    assert "UMask" in unit and int(unit["UMask"][-1], 8) & 0o027 == 0o027
    command = unit["ExecStart"][0].split()[0]
    proc = run_installed(root, inside(root, Path(command)), "--config", bad, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"skns-metrics: {bad}: metrics.window: must be > 0"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (package systemd): cannot verify the unit",
)
def test_systemd_analyze_verify(root: Path, tmp_path: Path) -> None:
    # --root makes systemd-analyze read the unit and look for its commands under the install;
    # the targets the unit orders itself after come from this machine's systemd.
    system_units = Path("/usr/lib/systemd/system")
    if not system_units.is_dir():
        pytest.skip("no /usr/lib/systemd/system on this machine: the unit's targets are missing")
    image = tmp_path / "image"
    shutil.copytree(root, image, symlinks=True, copy_function=os.link)  # hard links: cheap
    shutil.copytree(system_units, image / "usr/lib/systemd/system", symlinks=True)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={image}", "skns-metrics.service"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    # verify exits 0 on a value it cannot parse, with a warning: treat any output as a failure.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # Keep the sandbox from eroding: exposure 1.4 today ("OK"); fail above 2.0.
    proc = subprocess.run(
        [
            *("systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager"),
            *(f"--root={image}", "skns-metrics.service"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles must be root to chown")
@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers/systemd-tmpfiles are not installed (package systemd)",
)
def test_sysusers_and_tmpfiles_apply(root: Path, tmp_path: Path) -> None:
    image = tmp_path / "image"
    shutil.copytree(root / "etc", image / "etc", symlinks=True)
    for tool in (["systemd-sysusers"], ["systemd-tmpfiles", "--create"]):
        proc = subprocess.run(
            [*tool, f"--root={image}"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
    users = {
        fields[0]: (int(fields[2]), int(fields[3]))
        for fields in (line.split(":") for line in (image / "etc/passwd").read_text().splitlines())
    }
    uid, gid = users["skns"]
    assert uid < 1000, "skns must be a system user"
    state = (image / "var/lib/skns").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o750)
    config = (image / CONFIG).stat()
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, gid, 0o640)


@needs_seccomp
def test_installed_code_works_inside_the_units_sandbox(root: Path, tmp_path: Path) -> None:
    python = installed_python(root)
    probe = HERE / "sandbox/probe.py"
    proc = subprocess.run(
        [sys.executable, HERE / "sandbox/sandbox.py", root / UNIT, "--", python, probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "probe ok"), proc.stderr


def notifications(sock: socket.socket, until: str, proc: subprocess.Popen, log: Path) -> list[str]:
    """Datagrams on the test's $NOTIFY_SOCKET up to one holding the line ``until``."""
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            if proc.poll() is not None:
                break
            continue
        if until in seen[-1].splitlines():
            return seen
    raise AssertionError(f"no {until} (got {seen}); service log:\n{log.read_text()}")


def counted(output: Path) -> bool:
    """Has a window in metrics.jsonl counted a datagram? (Complete lines only.)"""
    if not output.exists():
        return False
    lines = output.read_text().split("\n")[:-1]
    return any(json.loads(line)["count"] > 0 for line in lines)


@needs_seccomp
def test_installed_service_runs_inside_the_units_sandbox(root: Path, tmp_path: Path) -> None:
    """The whole installed service, every subsystem but the relay (it needs a source), in the
    unit's sandbox: ready, serving, stopping cleanly; what systemd would see on $NOTIFY_SOCKET.
    """
    venv = root / VENV.lstrip("/")
    config = tmp_path / "config.toml"
    output = tmp_path / "state/metrics.jsonl"
    config.write_text(
        f'[service]\nstate_dir = "{tmp_path}/state"\n'
        f'control_socket = "{tmp_path}/run/control.sock"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\nworkers = 2\nwindow = 0.5\nintervals = [0.5]\n'
        f'output = "{output}"\n'
        '[executor]\nlisten = "127.0.0.1:0"\n'
        '[messenger]\nlisten = ["127.0.0.1:0"]\n'
        '[tasks]\nlisten = "127.0.0.1:0"\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    log = tmp_path / "service.log"
    command = [sys.executable, HERE / "sandbox/sandbox.py", root / UNIT, "--"]
    command += [venv / "bin/python", venv / "bin/skns-metrics", "--config", config]
    with log.open("wb") as out, notify:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=tmp_path)
        try:
            notifications(notify, "READY=1", proc, log)
            ctl = [venv / "bin/skns-ctl", "--config", config, "status", "--json"]
            status = run_installed(root, *ctl, cwd=tmp_path)
            assert status.returncode == 0, status.stderr
            children = json.loads(status.stdout)["children"]
            roles = {c["role"] for c in children}
            assert {"udp-worker", "executor-router", "messenger", "tasks"} <= roles, roles
            assert all(c["up"] for c in children), children

            listen = json.loads(status.stdout)["subsystems"]["metrics"]["listen"]
            host, _, port = listen.rpartition(":")
            deadline = time.monotonic() + 15
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                while not counted(output):
                    assert time.monotonic() < deadline, f"nothing counted:\n{log.read_text()}"
                    udp.sendto(b'{"A1": 1, "A2": 2, "A3": 3}', (host, int(port)))
                    time.sleep(0.1)

            proc.send_signal(signal.SIGTERM)
            notifications(notify, "STOPPING=1", proc, log)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_installed_ctl_reads_a_running_service(start_service, root: Path, tmp_path: Path) -> None:
    """The installed skns-ctl speaks the protocol of the service (run from the checkout)."""
    svc = start_service(
        metrics={
            "listen": "127.0.0.1:0",
            "workers": 1,
            "window": 0.5,
            "intervals": [0.5],
            "output": str(tmp_path / "m.jsonl"),
        }
    )
    ctl = root / VENV.lstrip("/") / "bin/skns-ctl"
    proc = run_installed(root, ctl, "--config", svc.config_path, "status", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "udp-worker 0" in proc.stdout
    svc.stop()
    proc = run_installed(root, ctl, "--config", svc.config_path, "status", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr


def can_unshare() -> str | None:
    """Why the pretend machine cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces, systemd-sysusers, setpriv)"
    for tool in ("unshare", "setpriv", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"no namespaces here: {probe.stderr.decode().strip()}"
    return None


@needs_seccomp
def test_sudo_make_install_start_reload_stop_uninstall(root: Path, tmp_path: Path) -> None:
    """The real thing, on a pretend machine (tests/sandbox/machine.py says what it does)."""
    if reason := can_unshare():
        pytest.skip(reason)
    proc = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", sys.executable),
            *(HERE / "sandbox/machine.py", REPO, tmp_path, root),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = tmp_path / "service.log"
    detail = proc.stdout + proc.stderr + (log.read_text()[-4000:] if log.exists() else "")
    assert (proc.returncode, proc.stdout.splitlines()[-1:]) == (0, ["machine ok"]), detail


def link_venv(src: str, dst: str) -> object:
    """copytree's copy_function for a copy of an install: the venv's files as hard links (74 MB
    not copied; make install keeps a venv newer than the sources and uninstall only unlinks),
    every other file copied (the test edits those), .skns-built too (the test sets its time)."""
    if f"/{VENV.strip('/')}/" in src and not src.endswith("/.skns-built"):
        os.link(src, dst)
        return dst
    return shutil.copy2(src, dst)


def test_upgrade_keeps_the_edited_config_and_uninstall_removes_only_its_own(
    root: Path, tmp_path: Path
) -> None:
    # Start from a copy of the first install (one venv build less), as a machine that has
    # run skns for a while: an edited config, some state, and other software around it.
    destdir = tmp_path / "destdir"
    shutil.copytree(root, destdir, symlinks=True, copy_function=link_venv)
    planted = {
        "usr/local/bin/other-tool": "#!/bin/sh\n",
        "usr/local/lib/other/keep.py": "x = 1\n",
        "etc/systemd/system/other.service": "[Service]\nExecStart=/bin/true\n",
        "etc/sysctl.d/10-other.conf": "vm.swappiness = 10\n",
    }
    for name, text in planted.items():
        (destdir / name).parent.mkdir(parents=True, exist_ok=True)
        (destdir / name).write_text(text)
    config = destdir / CONFIG
    edited = config.read_text().replace('log_level = "info"', 'log_level = "debug"')
    assert edited != config.read_text()
    config.write_text(edited)
    (destdir / "etc/skns/config.toml.dist").write_text("stale\n")
    state = destdir / "var/lib/skns/metrics.jsonl"  # what the running service wrote
    state.parent.mkdir(parents=True)
    state.write_text('{"timestamp": 10}\n')
    # The venv is rebuilt when the sources are newer than it (a git pull), and only then.
    built = destdir / VENV.lstrip("/") / ".skns-built"
    os.utime(built)
    assert " -m venv " not in make("install", destdir, "--dry-run")
    os.utime(built, (0, 0))
    assert " -m venv " in make("install", destdir, "--dry-run")
    os.utime(built)

    make("install", destdir)  # the upgrade (the venv is kept: newer than the sources)
    assert config.read_text() == edited
    assert (destdir / "etc/skns/config.toml.dist").read_text() != "stale\n"

    output = make("uninstall", destdir)
    assert "make purge" in output  # it says what it kept
    files, dirs = paths(destdir)
    assert files == set(planted) | {CONFIG, "var/lib/skns/metrics.jsonl"}
    assert config.read_text() == edited
    for name, text in planted.items():
        assert (destdir / name).read_text() == text
    assert {d for d in dirs if "skns" in d} == {"etc/skns", "var/lib/skns"}

    make("purge", destdir)
    files, dirs = paths(destdir)
    assert files == set(planted)
    assert not {d for d in dirs if "skns" in d}
    assert dirs - SYSTEM_DIRS <= {
        "usr",
        "usr/local",
        "etc",
        "etc/systemd",
        "usr/local/lib/other",
        "var",
        "var/lib",
    }


def test_uninstall_of_nothing_is_harmless(tmp_path: Path) -> None:
    make("uninstall", tmp_path)
    assert paths(tmp_path) == (set(), set())


def test_install_refuses_a_system_install_without_root(tmp_path: Path) -> None:
    # A user that is not root: `id -u` answers 1000 (the recipe asks it, through PATH).
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "id").chmod(0o755)
    # A copy of the Makefile alone: the recipe must stop before it touches anything.
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    proc = subprocess.run(
        ["make", "-C", str(work), "install"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
    )
    assert proc.returncode != 0
    # Stopped by install's own check, or by sysdeps' when a system package is missing.
    assert "run it with sudo" in proc.stderr or "run as root" in proc.stderr, proc.stderr
    assert paths(work) == ({"Makefile"}, set())
