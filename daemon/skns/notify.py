"""Talking to systemd: READY/STATUS/WATCHDOG/RELOADING/STOPPING over $NOTIFY_SOCKET.

Uses systemd-python's ``sd_notify``; without $NOTIFY_SOCKET every call is a
no-op, so the supervisor runs the same in a terminal.
"""

from __future__ import annotations

import os
import time

from systemd import daemon


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval = self._watchdog_interval()
        self._last_ping = 0.0
        self._last_status = ""

    @staticmethod
    def _watchdog_interval() -> float | None:
        """Half of WATCHDOG_USEC, when the watchdog is meant for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None

    def send(self, *fields: str) -> None:
        if self.enabled:
            daemon.notify("\n".join(fields))

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog_due(self, now: float) -> float | None:
        """Seconds until the next ping is due (None: no watchdog)."""
        if self.watchdog_interval is None:
            return None
        return max(0.0, self._last_ping + self.watchdog_interval - now)

    def ping(self, now: float) -> None:
        self._last_ping = now
        self.send("WATCHDOG=1")
