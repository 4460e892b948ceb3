"""Faults the supervisor contained: counted by place, logged rate-limited, shown in status.

The supervisor is the one process whose death stops every subsystem, so nothing a
subsystem tick, a control request, an output write or a reload raises may end its
loop. Each such step runs under :meth:`Faults.guard`: an exception is caught,
counted under the step's name, logged with its traceback the first time and then at
most once per ``LOG_EVERY`` seconds per step (a fault that repeats every loop turn
must not flood the journal), and the loop carries on. ``skns-ctl status`` and the
systemd STATUS line show the counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any

from .ratelimit import RateGate

log = logging.getLogger("skns.supervisor")

LOG_EVERY = 60.0


@dataclasses.dataclass
class Fault:
    count: int = 0
    error: str = ""  # the last one, "Type: message"
    last: float = 0.0  # wall clock of the last one


class Faults:
    def __init__(self) -> None:
        self.by_step: dict[str, Fault] = {}
        self._gate = RateGate(LOG_EVERY)

    def record(self, step: str, exc: BaseException) -> None:
        fault = self.by_step.setdefault(step, Fault())
        fault.count += 1
        fault.error = f"{type(exc).__name__}: {exc}"
        fault.last = time.time()
        unlogged = self._gate.allow(step)
        if unlogged is None:
            return
        more = f" ({unlogged} more since the last report)" if unlogged else ""
        log.error(
            "%s failed (contained, the service carries on; %d so far)%s",
            step,
            fault.count,
            more,
            exc_info=exc,
        )

    @contextlib.contextmanager
    def guard(self, step: str) -> Iterator[None]:
        """Run the ``with`` body; an exception from it is recorded, not raised."""
        try:
            yield
        except Exception as exc:
            self.record(step, exc)

    @property
    def total(self) -> int:
        return sum(f.count for f in self.by_step.values())

    def status(self) -> dict[str, Any]:
        return {
            step: {"count": f.count, "last": f.last, "error": f.error}
            for step, f in self.by_step.items()
        }

    def summary(self) -> str:
        if not self.by_step:
            return ""
        step, last = max(self.by_step.items(), key=lambda item: item[1].last)
        return f"{self.total} faults contained (last: {step}: {last.error})"
