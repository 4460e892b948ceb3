"""The tasks subsystem's place in the supervisor: one server child.

The worker pools are not children of the supervisor: the server forks them
itself (they die with it), because it must kill and replace one on its own the
moment a job overruns its limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..child import ChildSpec
from .server import run

if TYPE_CHECKING:
    from ..config import Settings


def children(settings: Settings) -> list[ChildSpec]:
    return [
        ChildSpec(
            subsystem="tasks", role="tasks", index=0, target=run, listen=settings.tasks.listen
        )
    ]
