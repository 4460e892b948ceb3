"""Run a command under the seccomp sandbox that skns-metrics.service asks systemd for.

systemd is not PID 1 on a build machine, so the unit's sandbox cannot be had from it. This
rebuilds the parts that can break a Python service from the unit's own settings, with
libseccomp, the library systemd itself uses, and then execs the command:

- ``SystemCallFilter=`` (an allow list of syscall groups, ``~`` entries removed), as
  expanded by ``systemd-analyze syscall-filter``, with ``SystemCallErrorNumber=EPERM``;
- ``MemoryDenyWriteExecute=yes``: mmap with PROT_WRITE|PROT_EXEC, mprotect and pkey_mprotect
  adding PROT_EXEC, shmat with SHM_EXEC fail with EPERM (systemd's seccomp rules);
- ``RestrictAddressFamilies=``: socket() with another family fails with EAFNOSUPPORT;
- ``CapabilityBoundingSet=`` (empty): every capability leaves the bounding set, so the
  command runs without any, even as root;
- ``NoNewPrivileges=yes`` (seccomp needs it without CAP_SYS_ADMIN anyway).

With ``--filesystem`` (root only), in a new mount namespace: ``ProtectSystem=strict`` (every
mount read-only but /dev, /proc, /sys and the ``StateDirectory=``/``RuntimeDirectory=``/
``ReadWritePaths=`` ones), ``PrivateTmp=``, ``ProtectHome=``, ``ProtectKernelTunables=`` and
``ProtectControlGroups=``. With ``--user`` (root only): ``User=`` and ``Group=``.

Usage: ``python sandbox.py [--filesystem] [--user] UNIT_FILE -- COMMAND [ARG ...]``.
Seccomp filters stack and survive execve, so each rule set is its own filter and the
strictest answer wins.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import mmap
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

ACT_ALLOW = 0x7FFF0000
CMP_EQ = 4
CMP_GT = 6
CMP_MASKED_EQ = 7
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
CLONE_NEWNS = 0x00020000
SHM_EXEC = 0o100000
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


def act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class Filter:
    """One seccomp filter built with libseccomp and loaded into this process."""

    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

    def __init__(self, default_action: int) -> None:
        self.ctx = ctypes.c_void_p(self.lib.seccomp_init(ctypes.c_uint32(default_action)))
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> bool:
        """Add a rule; False when this architecture has no such syscall."""
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return False
        array = (ArgCmp * max(len(cmps), 1))(*(ArgCmp(*c) for c in cmps))
        rc = self.lib.seccomp_rule_add_array(
            self.ctx, ctypes.c_uint32(action), nr, len(cmps), array
        )
        if rc != 0:
            raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
        return True

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        if rc != 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
        self.lib.seccomp_release(self.ctx)


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """The [Service] assignments of a unit file, every value of a repeated key in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """Every syscall group systemd knows, as ``systemd-analyze syscall-filter`` lists them."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in out.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if raw.startswith("@"):
            current = groups.setdefault(line, [])
        elif raw.startswith(" "):
            current.append(line)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        if name.startswith("@"):
            found |= expand(groups[name], groups)
        else:
            found.add(name)
    return found


def allowed_syscalls(settings: dict[str, list[str]]) -> set[str]:
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        if value.startswith("~"):
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    return allowed


def yes(settings: dict[str, list[str]], key: str) -> bool:
    return settings.get(key, ["no"])[-1] in ("yes", "true", "strict", "full")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4].encode().decode("unicode_escape") for line in f}
    return sorted(points)


def protect_filesystem(settings: dict[str, list[str]]) -> None:
    """The unit's file-system view, in a new mount namespace of this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    mount("--make-rprivate", "/")
    writable = [f"/var/lib/{d}" for v in settings.get("StateDirectory", []) for d in v.split()]
    writable += [f"/run/{d}" for v in settings.get("RuntimeDirectory", []) for d in v.split()]
    writable += [p for v in settings.get("ReadWritePaths", []) for p in v.split()]
    for path in writable:
        mount("--bind", path, path)  # a mount of its own, left writable below
    # Mounts below a path replaced by a fresh tmpfs are out of sight (and out of reach of a
    # remount): another test's container under /tmp, say.
    hidden: list[str] = []
    if yes(settings, "PrivateTmp"):
        for path in ("/tmp", "/var/tmp"):
            mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", path)
        writable += ["/tmp", "/var/tmp"]
        hidden += ["/tmp", "/var/tmp"]
    if yes(settings, "ProtectHome"):
        for path in ("/home", "/root", "/run/user"):
            if os.path.isdir(path):
                mount("-t", "tmpfs", "-o", "mode=000", "tmpfs", path)
                hidden.append(path)
    api = ("/dev", "/proc", "/sys")
    strict = settings.get("ProtectSystem", ["no"])[-1] == "strict"
    for point in mount_points():
        if point in writable or any(point == a or point.startswith(a + "/") for a in api):
            continue
        if any(point.startswith(h + "/") for h in hidden):
            continue
        if strict:
            mount("-o", "remount,bind,ro", point)
    for key, path in (
        ("ProtectKernelTunables", "/proc/sys"),
        ("ProtectControlGroups", "/sys/fs/cgroup"),
    ):
        if yes(settings, key) and os.path.isdir(path):
            mount("--bind", path, path)
            mount("-o", "remount,bind,ro", path)


def switch_user(settings: dict[str, list[str]]) -> None:
    user = pwd.getpwnam(settings["User"][-1])
    gid = grp.getgrnam(settings["Group"][-1]).gr_gid if "Group" in settings else user.pw_gid
    os.initgroups(user.pw_name, gid)
    os.setgid(gid)
    os.setuid(user.pw_uid)
    os.environ.update(USER=user.pw_name, LOGNAME=user.pw_name, HOME=user.pw_dir)


def drop_capabilities() -> None:
    """Empty the bounding set: after execve the command holds no capability, root or not."""
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and os.geteuid() == 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def apply(settings: dict[str, list[str]], filesystem: bool = False, user: bool = False) -> None:
    # In systemd's order: mounts, capabilities, user, then seccomp (which refuses mount()).
    if filesystem:
        protect_filesystem(settings)
    if settings.get("CapabilityBoundingSet", [None])[-1] == "":
        drop_capabilities()
    if user:
        switch_user(settings)
    if ctypes.CDLL(None).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        mdwe = Filter(ACT_ALLOW)
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        mdwe.rule(act_errno(errno.EPERM), "mmap", (2, CMP_MASKED_EQ, wx, wx))
        for name in ("mprotect", "pkey_mprotect"):
            x = mmap.PROT_EXEC
            mdwe.rule(act_errno(errno.EPERM), name, (2, CMP_MASKED_EQ, x, x))
        mdwe.rule(act_errno(errno.EPERM), "shmat", (2, CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        mdwe.load()
    if settings.get("RestrictAddressFamilies"):
        keep = {FAMILIES[f] for v in settings["RestrictAddressFamilies"] for f in v.split()}
        families = Filter(ACT_ALLOW)
        refuse = act_errno(errno.EAFNOSUPPORT)
        for family in range(max(keep)):
            if family not in keep:
                families.rule(refuse, "socket", (0, CMP_EQ, family, 0))
        families.rule(refuse, "socket", (0, CMP_GT, max(keep), 0))
        families.load()
    # Last: the allow list refuses seccomp() itself, so no filter can follow it.
    if settings.get("SystemCallFilter"):
        code = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
        allow = Filter(act_errno(code))
        for name in sorted(allowed_syscalls(settings)):
            allow.rule(ACT_ALLOW, name)
        allow.load()


def main(argv: list[str]) -> int:
    flags = {"--filesystem", "--user"}
    options = set()
    while argv and argv[0] in flags:
        options.add(argv.pop(0))
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    settings = unit_settings(Path(argv[0]))
    apply(settings, filesystem="--filesystem" in options, user="--user" in options)
    os.execv(argv[2], argv[2:])
    return 127  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
