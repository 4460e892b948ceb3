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
    """Stamp every record with the process's name (``udp-worker 3``), for the formatters."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.label
        return True


def journal_fields(role: str, index: int | None) -> dict[str, str]:
    """The journal fields every record of this process carries, besides journald's own
    (_PID, _SYSTEMD_UNIT): ``journalctl -u skns-metrics ROLE=udp-worker ROLE_INDEX=3``.
    Field names must be upper case: journald drops any other (JournalHandler passes the
    record's own attributes through as lower-case fields, which is why ``role`` never
    reached the journal)."""
    fields = {"SYSLOG_IDENTIFIER": "skns-metrics", "ROLE": role}
    if index is not None:
        fields["ROLE_INDEX"] = str(index)
    return fields


def setup(level: str = "info", role: str = "supervisor", index: int | None = None) -> None:
    """(Re)configure the root logger for this process; call again after a fork.

    ``role`` and ``index`` are the child's (``udp-worker``, 3); the supervisor has no index.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    name = role if index is None else f"{role} {index}"
    handler: logging.Handler
    if under_systemd():
        from systemd.journal import JournalHandler

        handler = JournalHandler(**journal_fields(role, index))
        handler.setFormatter(logging.Formatter("%(role)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s [%(role)s %(process)d] %(name)s: %(message)s"
            )
        )
    handler.addFilter(_RoleFilter(name))
    root.addHandler(handler)
    root.setLevel(level.upper())
