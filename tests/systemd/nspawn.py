"""A real systemd, booted with systemd-nspawn on an overlay of this machine's root.

The container's root is an overlay whose lower layer is the host's ``/`` (read only: every
write lands in the upper directory), so it has the host's Python, compilers and libraries
and boots the host's systemd as its PID 1 in about 3 s. It runs on a private network (its
own loopback, no route out), so the default ports of config.toml are free inside it and no
package registry is reachable: the venv comes from a ``make install DESTDIR=`` on the host
(see ``Unit.unpack``). Commands run inside through ``nsenter`` into every namespace of the
container's PID 1.

Layout of the temp dir (on a disk filesystem: the upper layer takes the install's writes):
``upper/`` and ``work/`` (overlay), ``root/`` (the mount: ``root/src`` is the checkout),
``console.log`` (nspawn's output).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 60.0
# A clean environment for commands inside: nothing of the test's venv or pytest leaks in.
INSIDE_ENV = [
    "env",
    "-i",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
]


class CannotBoot(Exception):
    """This machine cannot boot a container (the reason is the message): tests skip."""


def skip_reason() -> str | None:
    """Why systemd-nspawn cannot run here, for the checks that need no trial mount."""
    if os.geteuid() != 0:
        return "booting systemd in a container needs root"
    for tool in ("systemd-nspawn", "nsenter", "systemd-id128", "git"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs systemd-container)"
    return None


def scratch_parent() -> Path:
    """A temp parent on a disk filesystem: /tmp unless it is a tmpfs, else /var/tmp."""
    tmp = Path(tempfile.gettempdir())
    return Path("/var/tmp") if _fstype(tmp) == "tmpfs" else tmp


def _fstype(path: Path) -> str:
    """The filesystem type of the mount holding path (the longest mount point prefix)."""
    best, fstype = "", ""
    resolved = str(path.resolve())
    for entry in Path("/proc/self/mounts").read_text().splitlines():
        fields = entry.split()
        mount_point = fields[1].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, fields[2]
    return fstype


def _test_containers() -> bool:
    """Whether a container of a test run (``-M skns-test-PID``) is running on this machine."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if argv[0].endswith(b"systemd-nspawn") and any(
                arg.startswith(b"skns-test-") for arg in argv
            ):
                return True
    return False


class Container:
    """One booted container; ``run`` executes a command inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix="skns-nspawn.", dir=scratch_parent()))
        self.root = self.dir / "root"
        self.console = self.dir / "console.log"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.boot_seconds = 0.0
        self._mounted = False
        self._sysctl_restore: dict[Path, tuple[str, str]] = {}

    # ---- life cycle -------------------------------------------------------------------------

    def boot(self) -> None:
        """Mount the overlay, copy the checkout in, boot, wait for systemd."""
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir()
        options = f"lowerdir=/,upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
        proc = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise CannotBoot(f"overlay mount of / refused: {proc.stderr.strip()}")
        self._mounted = True
        self._prepare_root()
        self._apply_sysctl()
        started = time.monotonic()
        with self.console.open("wb") as console:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--register=no",
                    "--keep-unit",
                    "-D",
                    str(self.root),
                    "-M",
                    self.name,
                    "-b",
                    "--private-network",
                    "--console=pipe",
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid1 = self._find_pid1(started + BOOT_TIMEOUT)
        self._wait_system_running(started + BOOT_TIMEOUT)
        self.boot_seconds = time.monotonic() - started

    def _prepare_root(self) -> None:
        """A fresh machine id; no skns of the host's; the checkout's files."""
        machine_id = subprocess.run(
            ["systemd-id128", "new"], capture_output=True, text=True, check=True
        ).stdout
        etc = self.root / "etc"
        (etc / "machine-id").unlink(missing_ok=True)
        (etc / "machine-id").write_text(machine_id)
        # An install on the host would show through the lower layer: start from none.
        for leftover in (
            "etc/skns",
            "var/lib/skns",
            "usr/local/lib/skns",
            "etc/systemd/system/skns-metrics.service",
            "etc/systemd/system/skns-metrics.service.d",
        ):
            path = self.root / leftover
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        # The working tree as it is (tracked and new files, edits included), not HEAD.
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        src = self.root / "src"
        src.mkdir()
        for name in files.decode().split("\0"):
            if name and (REPO / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, src / name)

    def _apply_sysctl(self) -> None:
        """Raise what systemd/*.conf (sysctl.d) raises, as the install does on a real machine.

        make install applies them with systemd-sysctl, which a container cannot (its
        /proc/sys is read only, and net.core.rmem_max is one for the whole kernel, not per
        network namespace): without it the service's UDP queues are capped at the host's
        rmem_max. Only raised, never lowered; restored by close() unless changed meanwhile.
        """
        for conf in sorted((REPO / "systemd").glob("*.conf")):
            for line in conf.read_text().splitlines():
                key, sep, value = line.partition("=")
                if not sep or line.lstrip().startswith(("#", ";")):
                    continue
                path = Path("/proc/sys") / key.strip().replace(".", "/")
                old = path.read_text().strip()
                if int(old) < int(value.strip()):
                    path.write_text(value.strip())
                    self._sysctl_restore[path] = (old, value.strip())

    def _find_pid1(self, deadline: float) -> int:
        """The container's init: nspawn's child whose innermost pid is 1."""
        assert self.nspawn is not None
        pid = self.nspawn.pid
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise CannotBoot(f"systemd-nspawn exited {self.nspawn.returncode}: {self.tail()}")
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                    status = Path(f"/proc/{child}/status").read_text()
                    nspid = next(x for x in status.splitlines() if x.startswith("NSpid:"))
                    if nspid.split()[-1] == "1" and len(nspid.split()) > 2:
                        return int(child)
            time.sleep(0.05)
        raise CannotBoot(f"no container init within {BOOT_TIMEOUT:.0f}s: {self.tail()}")

    def _wait_system_running(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            assert self.nspawn is not None
            if self.nspawn.poll() is not None:
                raise CannotBoot(f"systemd-nspawn exited {self.nspawn.returncode}: {self.tail()}")
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise CannotBoot(f"systemd did not finish booting ({state!r}): {self.tail()}")

    def close(self) -> None:
        """Power the container off (SIGTERM to nspawn), unmount, remove the temp dir."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.terminate()
            try:
                self.nspawn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # nspawn leads its own session: this reaches it and nothing else.
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=15)
        if self._mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
            self._mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)
        # Another test run's container may need the raised value still: then it stays.
        if not _test_containers():
            for path, (old, raised) in self._sysctl_restore.items():
                with contextlib.suppress(OSError):
                    if path.read_text().strip() == raised:
                        path.write_text(old)
        self._sysctl_restore.clear()

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # ---- commands inside ----------------------------------------------------------------------

    def command(self, *argv: str) -> list[str]:
        """argv as run inside the container, in a clean environment."""
        return ["nsenter", "-t", str(self.pid1), "-a", *INSIDE_ENV, *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 120.0) -> str:
        return self.run("sh", "-c", script, check=check, timeout=timeout).stdout

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def read(self, path: str) -> str:
        """A file inside the container (through the overlay mount)."""
        return (self.root / path.lstrip("/")).read_text()

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "-", path, input=text)
