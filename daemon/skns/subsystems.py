"""The subsystems the supervisor runs, in start order.

Each name is a sub-package whose ``service`` module exposes
``children(settings) -> list[ChildSpec]``; a subsystem whose table has
``enabled = false`` contributes no child.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .child import ChildSpec
    from .config import Settings

NAMES = ("metrics", "relay", "executor", "messenger", "tasks")


def child_specs(settings: Settings) -> list[ChildSpec]:
    specs: list[ChildSpec] = []
    for name in NAMES:
        if getattr(settings, name).enabled:
            service = importlib.import_module(f"skns.{name}.service")
            specs.extend(service.children(settings))
    return specs
