"""The messenger's processes: one HTTP replica per configured listen address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..child import ChildSpec
from . import replica

if TYPE_CHECKING:
    from ..config import Settings


def children(settings: Settings) -> list[ChildSpec]:
    return [
        ChildSpec("messenger", "messenger", i, replica.run, listen=address)
        for i, address in enumerate(settings.messenger.listen)
    ]
