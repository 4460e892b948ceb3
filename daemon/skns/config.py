"""Load ``config.toml`` into :class:`Settings`.

Every table is optional and every key has a default, so an empty file is a
valid configuration; an unknown table, an unknown key or a bad value is a
:class:`~skns.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from .cluster.settings import ClusterSettings
from .errors import ConfigError, SettingError
from .executor.probe import probe_handler
from .executor.settings import ExecutorSettings
from .messenger.settings import MessengerSettings
from .metrics.settings import MetricsSettings
from .relay.settings import RelaySettings
from .settings import HostPort, Section, unreadable
from .tasks.settings import TasksSettings

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclasses.dataclass(frozen=True)
class ServiceSettings(Section):
    table = "service"
    state_dir: Path = Path("./var").absolute()
    control_socket: Path = Path("./var/run/control.sock").absolute()
    log_level: str = "info"
    # Seconds a child may go without a heartbeat before it is killed and restarted.
    heartbeat_timeout: float = 10.0
    # Seconds children get to exit after SIGTERM before SIGKILL.
    graceful_timeout: float = 10.0
    # A child that dies within this many seconds of its start has failed to start ...
    start_period: float = 5.0
    # ... and after this many such failures in a row that subsystem is stopped (or rolled
    # back to its last good settings after a reload); the others go on.
    start_failures: int = 5
    # Restart backoff: doubles from restart_backoff up to restart_backoff_max seconds.
    restart_backoff: float = 0.1
    restart_backoff_max: float = 10.0
    # Seconds a control socket client gets to send its request and read the answer.
    control_timeout: float = 5.0

    def validate(self) -> None:
        self.require(self.log_level in LOG_LEVELS, "log_level", f"must be one of {LOG_LEVELS}")
        positive = ("heartbeat_timeout", "graceful_timeout", "start_period", "restart_backoff")
        for key in (*positive, "control_timeout"):
            self.require(getattr(self, key) > 0, key, "must be > 0")
        self.require(self.start_failures >= 1, "start_failures", "must be >= 1")
        self.require(
            self.restart_backoff_max >= self.restart_backoff,
            "restart_backoff_max",
            "must be >= restart_backoff",
        )

    @property
    def runtime_dir(self) -> Path:
        """Where sockets live: beside the control socket (``/run/skns`` under systemd)."""
        return self.control_socket.parent


SECTIONS: tuple[type[Section], ...] = (
    ServiceSettings,
    MetricsSettings,
    RelaySettings,
    ExecutorSettings,
    MessengerSettings,
    TasksSettings,
    ClusterSettings,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    path: Path
    service: ServiceSettings
    metrics: MetricsSettings
    relay: RelaySettings
    executor: ExecutorSettings
    messenger: MessengerSettings
    tasks: TasksSettings
    cluster: ClusterSettings

    def as_dict(self) -> dict[str, Any]:
        return {s.table: getattr(self, s.table).as_dict() for s in SECTIONS}


def parse(data: dict[str, Any], path: Path) -> Settings:
    """Build Settings from a parsed TOML document read from ``path``."""
    sections: dict[str, Section] = {}
    known = {s.table: s for s in SECTIONS}
    for table in data:
        if table not in known:
            raise ConfigError(path, table, f"unknown table (known tables: {', '.join(known)})")
    for name, cls in known.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(path, name, "must be a table")
        try:
            sections[name] = cls.from_table(table)
        except SettingError as exc:
            raise ConfigError(path, exc.key, exc.reason) from None
    settings = Settings(path=path, **sections)  # type: ignore[arg-type]
    _check_ports(settings)
    return settings


# Hosts that listen on every address of their family.
_ANY = {"", "0.0.0.0", "::"}


def _listeners(settings: Settings) -> list[tuple[str, str, HostPort]]:
    """(key, protocol, address) of every socket the enabled subsystems listen on."""
    out = []
    if settings.metrics.enabled:
        out.append(("metrics.listen", "udp", settings.metrics.listen))
    if settings.executor.enabled:
        out.append(("executor.listen", "tcp", settings.executor.listen))
    if settings.messenger.enabled:
        out += [("messenger.listen", "tcp", a) for a in settings.messenger.listen]
    if settings.tasks.enabled:
        out.append(("tasks.listen", "tcp", settings.tasks.listen))
    return out


def _check_ports(settings: Settings) -> None:
    """Two subsystems on one port: the second would die at every start."""
    seen: list[tuple[str, str, HostPort]] = []
    for key, proto, addr in _listeners(settings):
        for other_key, other_proto, other in seen:
            if (
                proto == other_proto
                and addr.port == other.port != 0
                and (addr.host == other.host or addr.host in _ANY or other.host in _ANY)
            ):
                where = "twice in" if key == other_key else "also in"
                raise ConfigError(
                    settings.path, key, f"{proto} port {addr.port} is {where} {other_key}"
                )
        seen.append((key, proto, addr))


def load(path: Path | str, deep: bool = True) -> Settings:
    """Read and validate the TOML file at ``path``.

    ``deep`` also checks what needs more than the file: that the executor's handler
    imports and is callable (in a throwaway process). The service and ``check-config``
    load deep; a command that only needs a path from the file need not."""
    path = Path(path).absolute()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(path, None, unreadable(exc)) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        byte = exc.object[exc.start]
        raise ConfigError(
            path, None, f"not UTF-8: byte 0x{byte:02x} on line {line} (offset {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    settings = parse(data, path)
    if deep and settings.executor.enabled:
        problem = probe_handler(settings.executor.handler)
        if problem is not None:
            raise ConfigError(path, "executor.handler", problem)
    return settings


def control_socket(path: Path | str) -> tuple[Path, ConfigError | None]:
    """The control socket a config names, even when the config is broken elsewhere.

    ``skns-ctl status`` needs nothing else, and a typo in some other key must not cost
    the operator the one command that shows what runs. Returns the socket and the error
    that made the full load fail (None if it did not): from a file that is not valid
    TOML, the ``control_socket = "..."`` line of ``[service]`` is taken as written;
    without one, the default."""
    try:
        return load(path, deep=False).service.control_socket, None
    except ConfigError as exc:
        error = exc
    found: object = None
    try:
        text = Path(path).read_bytes().decode(errors="replace")
    except OSError:
        text = ""
    try:
        found = tomllib.loads(text).get("service", {}).get("control_socket")
    except (tomllib.TOMLDecodeError, AttributeError):
        match = _CONTROL_SOCKET_LINE.search(text)
        found = match and match.group(1)
    if isinstance(found, str) and found:
        return Path(found).expanduser().absolute(), error
    return ServiceSettings.control_socket, error


# A `control_socket = "..."` line inside [service] (up to the next table), for broken files.
_CONTROL_SOCKET_LINE = re.compile(
    r'^\[service\][^\[]*?^\s*control_socket\s*=\s*["\']([^"\'\n]+)["\']', re.M | re.S
)


def default_path() -> Path:
    """The config a command uses when given none: $SKNS_CONFIG, else ./config.toml."""
    return Path(os.environ.get("SKNS_CONFIG", "config.toml"))
