"""The file descriptors the supervisor keeps across its own restart.

What must outlive the supervisor process (the listening sockets with their
kernel queues, the memfd holding the metrics state) is registered here under
a name. Two ways carry them over:

* under systemd, each fd is also uploaded to the service's file descriptor
  store (``FDSTORE=1`` with ``FDNAME=``); systemd passes the store back to the
  next start, after ``systemctl restart`` as after a crash that ``Restart=``
  restarts;
* without systemd, the supervisor re-executes itself in place (``skns-ctl
  restart``, SIGUSR2) and passes the same fds itself.

Either way the next start finds them as socket activation describes:
``LISTEN_PID`` (its own pid), ``LISTEN_FDS`` (how many, from fd 3 on) and
``LISTEN_FDNAMES`` (their names, colon-separated).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import NoReturn

from systemd import daemon

log = logging.getLogger("skns.fdstore")

LISTEN_FDS_START = 3
_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def inherited(environ: MutableMapping[str, str]) -> dict[str, int]:
    """The fds passed to this process, by name; removes the variables from ``environ``
    (children must not take them for theirs). Nameless fds are called ``unknown``
    (systemd's name for them); a second fd of one name is closed."""
    values = [environ.pop(key, "") for key in _ENV]
    pid, count, names = values
    if not pid or not count:
        return {}
    try:
        if int(pid) != os.getpid():
            return {}
        n = int(count)
    except ValueError:
        log.error("ignoring malformed LISTEN_PID=%r LISTEN_FDS=%r", pid, count)
        return {}
    labels = names.split(":") if names else []
    found: dict[str, int] = {}
    for i in range(n):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            log.error("LISTEN_FDS says %d fds, but fd %d is not open", n, fd)
            continue
        name = labels[i] if i < len(labels) and labels[i] else "unknown"
        if name in found:
            log.warning("a second fd named %r was passed: closed", name)
            os.close(fd)
            continue
        found[name] = fd
    return found


class FdStore:
    """The named fds this supervisor holds for its successor."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.systemd = bool(env.get("NOTIFY_SOCKET"))
        self._passed = inherited(env)
        self.held: dict[str, int] = {}
        if self._passed:
            log.info("got %d fd(s) from before the restart: %s", len(self._passed), self.names())

    def names(self) -> str:
        return ", ".join(sorted(self._passed)) or "none"

    def take(self, name: str) -> int | None:
        """The fd passed under ``name``, now held again; None when none was."""
        fd = self._passed.pop(name, None)
        if fd is not None:
            self.held[name] = fd
        return fd

    def keep(self, name: str, fd: int) -> None:
        """Hold ``fd`` under ``name`` (replacing one of that name) and upload it to systemd.
        The caller still owns ``fd``: it closes it after :meth:`forget`."""
        self.forget(name)
        self.held[name] = fd
        self._notify(f"FDSTORE=1\nFDNAME={name}", [fd])

    def forget(self, name: str) -> None:
        """Stop holding ``name``: removed from systemd's store. The caller closes the fd."""
        if self.held.pop(name, None) is not None:
            self._notify(f"FDSTOREREMOVE=1\nFDNAME={name}")

    def drop_unclaimed(self) -> None:
        """Close what was passed and not taken: nothing of the running config uses it."""
        for name, fd in sorted(self._passed.items()):
            log.info("fd %r from before the restart is no longer used: closed", name)
            self.held[name] = fd
            self.forget(name)
            os.close(fd)
        self._passed.clear()

    def copies(self) -> dict[str, int]:
        """Duplicates of every held fd, for a re-exec: they stay open while the service
        stops and closes its own. One found closed (its owner failed and did not say
        so) is left out: the next run binds anew."""
        found = {}
        # Above every held number: a copy must not take the number of one still to copy.
        floor = max(self.held.values(), default=0) + 1
        for name, fd in self.held.items():
            try:
                found[name] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
            except OSError as exc:
                log.error("%s (fd %d) is not open (%s): not passed on", name, fd, exc)
        return found

    def _notify(self, message: str, fds: list[int] | None = None) -> None:
        if not self.systemd:
            return
        try:
            daemon.notify(message, fds=fds or [])
        except OSError as exc:  # the store is full or disabled: the restart loses this fd
            log.warning("systemd did not take %s: %s", message.replace("\n", " "), exc)


def pass_on(held: Mapping[str, int], environ: MutableMapping[str, str]) -> None:
    """Arrange ``held`` at fd 3 on, inheritable, and describe them in ``environ`` for
    the program this process is about to exec (the pid stays the same). Every other
    fd of this process is close-on-exec; those at 3 on are overwritten."""
    names = list(held)
    # Out of the way first, so that placing one cannot overwrite another still to place.
    floor = LISTEN_FDS_START + len(names)
    moved = [fcntl.fcntl(held[name], fcntl.F_DUPFD_CLOEXEC, floor) for name in names]
    for i, fd in enumerate(moved):
        os.dup2(fd, LISTEN_FDS_START + i, inheritable=True)
        os.close(fd)
    environ["LISTEN_PID"] = str(os.getpid())
    environ["LISTEN_FDS"] = str(len(names))
    environ["LISTEN_FDNAMES"] = ":".join(names)


def reexec(fds: Mapping[str, int]) -> NoReturn:
    """Replace this process by a fresh run of the same command line, passing ``fds``.
    Nothing may log between placing the fds and the exec: a log handler's fd may have
    been overwritten."""
    pass_on(fds, os.environ)
    os.execv(sys.executable, sys.orig_argv)
