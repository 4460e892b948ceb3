"""The relay under the supervisor: one child, role ``relay``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..child import ChildContext, ChildSpec
from .relay import Relay

if TYPE_CHECKING:
    from ..config import Settings


def run(ctx: ChildContext) -> None:
    """The child's target: relay until SIGTERM, publishing stats for ``skns-ctl status``."""
    relay = Relay.from_settings(ctx.settings.relay)
    ctx.ready()  # a client: up as soon as it runs; its connections show in its stats
    ctx.serve(relay.run, relay.stats)


def children(settings: Settings) -> list[ChildSpec]:
    if not settings.relay.enabled:
        return []
    return [ChildSpec(subsystem="relay", role="relay", index=0, target=run)]
