"""The one exception hierarchy of skns.

Everything skns raises on purpose derives from :class:`SknsError`, so a caller
can tell our failures (a bad config, a control socket that does not answer)
from bugs.
"""

from __future__ import annotations

from pathlib import Path


class SknsError(Exception):
    """Base class of every error skns raises on purpose."""


class ConfigError(SknsError):
    """The configuration cannot be used; names the file and the key."""

    def __init__(self, path: Path | str | None, key: str | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.reason = reason
        where = str(self.path) if self.path is not None else "<config>"
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


class SettingError(SknsError):
    """A value is wrong; raised by a settings section, turned into ConfigError by the loader."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class AlreadyRunning(SknsError):
    """Another service holds this state directory."""


class ControlError(SknsError):
    """The control socket could not be reached or gave a bad answer."""


class ServiceNotRunning(ControlError):
    """No service answers on the control socket."""


class ProtocolError(SknsError):
    """A peer sent something that breaks a protocol we speak."""


class LayoutMismatch(SknsError):
    """This host's configuration differs from a setting fixed when the cluster's streams and
    buckets were made (``[cluster] partitions``, ``lease_ttl``, ``[tasks] result_ttl``)."""


class ClusterBusy(SknsError):
    """The cluster's executor still runs, or holds events not run: not removed."""
