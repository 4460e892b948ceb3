"""Logging set-up: journald with structured fields under systemd, stderr otherwise."""

from __future__ import annotations

import logging
import os
import sys


def under_systemd() -> bool:
    """True when our stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _RoleFilter(logging.Filter):
    """Stamp every record with the process role: the journal field ROLE= (journald adds
    _PID itself), and ``[role pid]`` on stderr."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


def setup(level: str = "info", role: str = "supervisor") -> None:
    """(Re)configure the root logger for this process; call again after a fork."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler: logging.Handler
    if under_systemd():
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="skns-metrics")
        handler.setFormatter(logging.Formatter("%(role)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s [%(role)s %(process)d] %(name)s: %(message)s"
            )
        )
    handler.addFilter(_RoleFilter(role))
    root.addHandler(handler)
    root.setLevel(level.upper())
