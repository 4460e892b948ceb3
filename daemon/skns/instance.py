"""One service per state directory: an exclusive ``flock`` on ``state_dir/skns.lock``.

Without it a second ``skns-metrics`` with the same config would start beside the first
and, through SO_REUSEPORT, silently take half the metrics datagrams. The lock belongs
to the open file, so the kernel drops it when the supervisor dies however it dies:
nothing stale to clean up. The file is opened close-on-exec, and forked children
close their copy (see ``Supervisor._close_in_child``), so only the supervisor holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .errors import AlreadyRunning

LOCK_FILE = "skns.lock"


class InstanceLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise AlreadyRunning(
                f"another skns (pid {holder}) is running with state_dir {state_dir} "
                f"(it holds {self.path}); stop it first"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        """Release the lock (the file stays: unlinking it would race a starting instance)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
