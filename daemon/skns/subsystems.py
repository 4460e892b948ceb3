"""The subsystems the supervisor runs, in start order.

Each name is a sub-package whose ``service`` module exposes either
``children(settings) -> list[ChildSpec]`` (children that need nothing from the
supervisor but, maybe, a listening socket: ``ChildSpec.listen``), or
``supervise(settings, store) -> Part`` when the subsystem has work in the
supervisor itself (metrics: sockets and shared memory made before the fork and
kept in the fd ``store``, windows closed and written by the supervisor). A
subsystem whose table has ``enabled = false`` contributes nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .child import ChildSpec
    from .config import Settings
    from .fdstore import FdStore

NAMES = ("metrics", "relay", "executor", "messenger", "tasks")


class Part(Protocol):
    """A subsystem as the supervisor sees it."""

    name: str

    def children(self) -> list[ChildSpec]: ...

    def child_started(self, spec: ChildSpec, started: float) -> None: ...

    def child_exited(self, spec: ChildSpec) -> None: ...

    def tick(self, now: float) -> float:
        """Do due work; return the seconds until it wants to be called again."""
        ...

    def status(self) -> dict[str, Any]: ...

    def summary(self) -> str:
        """A few words for the one-line systemd STATUS=."""
        ...

    def reopen(self) -> None: ...

    def stop(self) -> None:
        """Called once its children have exited; persist what must survive."""
        ...


class ChildrenOnly:
    """A subsystem that only contributes children."""

    def __init__(self, name: str, specs: list[ChildSpec]) -> None:
        self.name = name
        self._specs = specs

    def children(self) -> list[ChildSpec]:
        return self._specs

    def child_started(self, spec: ChildSpec, started: float) -> None:
        pass

    def child_exited(self, spec: ChildSpec) -> None:
        pass

    def tick(self, now: float) -> float:
        return 3600.0

    def status(self) -> dict[str, Any]:
        return {}

    def summary(self) -> str:
        return ""

    def reopen(self) -> None:
        pass

    def stop(self) -> None:
        pass


def part(name: str, settings: Settings, store: FdStore | None = None) -> Part:
    service = importlib.import_module(f"skns.{name}.service")
    if hasattr(service, "supervise"):
        return service.supervise(settings, store)
    return ChildrenOnly(name, service.children(settings))


def parts(settings: Settings, store: FdStore | None = None) -> list[Part]:
    return [part(name, settings, store) for name in NAMES if getattr(settings, name).enabled]
