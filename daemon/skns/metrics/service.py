"""The metrics subsystem in the supervisor: sockets and shared memory made
before the fork, one pinned UDP worker per CPU, windows closed and written here."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..child import ChildContext, ChildSpec
from ..files import write_atomic
from . import worker
from .closer import Closer
from .output import Output, last_lines
from .partials import REASONS, Block, Partials
from .sockets import bind_all, kernel_drops, spread
from .window import Aggregate, Schedule, end_of, index_of, label

if TYPE_CHECKING:
    import socket

    from ..config import Settings

log = logging.getLogger("skns.metrics")

STATE_FILE = "metrics-state.json"
# How often to look again while a worker has not yet passed a window's end.
_RECHECK = 0.01
# How often to try again to write lines a full disk (or an I/O error) held back.
_RETRY = 1.0


def _worker_main(sock: socket.socket, block: Block, ctx: ChildContext) -> None:
    worker.run(ctx, sock, block)


def worker_count(settings: Settings) -> int:
    return settings.metrics.workers or len(os.sched_getaffinity(0))


class MetricsService:
    name = "metrics"

    def __init__(self, settings: Settings) -> None:
        m = settings.metrics
        self.settings = settings
        self.count = worker_count(settings)
        self.cpus = sorted(os.sched_getaffinity(0))
        self.sockets = bind_all(m.listen, self.count, m.recv_buffer_bytes)
        self.port = self.sockets[0].getsockname()[1]
        self.spread = spread(self.sockets)
        self.partials = Partials(self.count)
        self.schedule = Schedule(m.window, m.intervals)
        self.output = Output(m.output)
        self.state_path = settings.service.state_dir / STATE_FILE
        self.alive = [False] * self.count
        self.started = [0.0] * self.count
        self.windows_written = 0
        self.last_window: dict[str, Any] | None = None
        now = index_of(time.time(), m.window)
        self.closer = Closer(self.schedule, now)
        self._restore(now)

    # -- state across restarts ---------------------------------------------

    def _restore(self, now: int) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s: %s", self.state_path, exc)
            return
        finally:
            # Read once: a crash after this point must not replay the same windows.
            self.state_path.unlink(missing_ok=True)
        tail = last_lines(self.output.path, 1)
        written = float(tail[0]["timestamp"]) if tail else float("-inf")  # type: ignore[arg-type]
        windows = state.get("windows", {})
        state["windows"] = {
            w: a for w, a in windows.items() if end_of(int(w), self.schedule.base) > written
        }
        try:
            lines = self.closer.restore(state, now)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring %s: %s", self.state_path, exc)
            return
        # Lines the previous run closed but could not write (a full disk), oldest first.
        owed = [str(text) for text in state.get("unwritten", [])]
        self._write(owed + lines)
        log.info("resumed %d open window(s) from %s", len(state["windows"]), self.state_path)

    def _pending(self, upto: int) -> dict[int, Aggregate]:
        return {w: self._merged(w) for w in range(self.closer.next, upto + 1)}

    def stop(self) -> None:
        now = index_of(time.time(), self.schedule.base)
        self.tick(time.time())
        state = self.closer.snapshot(self._pending(max(now, self.closer.next)))
        state["unwritten"] = [line.decode().rstrip("\n") for line in self.output.pending]
        self.output.close()
        for s in self.sockets:
            s.close()
        try:
            write_atomic(self.state_path, json.dumps(state).encode())
        except OSError as exc:
            log.error(
                "cannot save open window(s) %s to %s (%s): they are lost",
                list(state["windows"]),
                self.state_path,
                exc.strerror or exc,
            )
            return
        log.info(
            "saved open window(s) %s and %d unwritten line(s) to %s",
            list(state["windows"]),
            len(state["unwritten"]),
            self.state_path,
        )

    # -- children -----------------------------------------------------------

    def children(self) -> list[ChildSpec]:
        return [
            ChildSpec(
                subsystem="metrics",
                role="udp-worker",
                index=i,
                target=functools.partial(_worker_main, self.sockets[i], self.partials.blocks[i]),
                cpus=(self.cpus[i % len(self.cpus)],),
            )
            for i in range(self.count)
        ]

    def child_started(self, spec: ChildSpec, started: float) -> None:
        self.alive[spec.index] = True
        self.started[spec.index] = started

    def child_exited(self, spec: ChildSpec) -> None:
        self.alive[spec.index] = False

    # -- closing windows ------------------------------------------------------

    def _passed(self, i: int, end: float) -> bool:
        """Has worker i published everything it will ever stamp before ``end``?"""
        if not self.alive[i]:
            return True
        return max(self.partials.blocks[i].watermark(), self.started[i]) >= end

    def _merged(self, w: int) -> Aggregate:
        total = Aggregate()
        for i, block in enumerate(self.partials.blocks):
            agg = block.read(w)
            if agg is None:
                log.error("worker %d's partial for window %d was overwritten: lost", i, w)
                continue
            total.merge(agg)
        return total

    def tick(self, now: float) -> float:
        retry = _RETRY if not self.output.flush() else float("inf")
        base = self.schedule.base
        while True:
            w = self.closer.next
            end = end_of(w, base)
            if now < end:
                return min(end - now, retry)
            if not all(self._passed(i, end) for i in range(self.count)):
                return _RECHECK
            agg = self._merged(w)
            self._write(self.closer.close(w, agg))
            self.windows_written += 1

    def _write(self, lines: list[str]) -> None:
        self.output.write(lines)
        shortest = label(self.schedule.intervals[0])
        for text in lines:
            row = json.loads(text)
            if row["count_type"] == shortest:
                self.last_window = row

    def reopen(self) -> None:
        self.output.reopen()

    # -- status ---------------------------------------------------------------

    def counters(self) -> tuple[int, dict[str, int]]:
        accepted = 0
        rejected = dict.fromkeys(REASONS, 0)
        for block in self.partials.blocks:
            a, r = block.counters()
            accepted += a
            for reason, n in zip(REASONS, r, strict=True):
                rejected[reason] += n
        return accepted, rejected

    def status(self) -> dict[str, Any]:
        accepted, rejected = self.counters()
        return {
            "accepted_per_worker": [block.counters()[0] for block in self.partials.blocks],
            "listen": f"{self.settings.metrics.listen.host}:{self.port}",
            "workers": self.count,
            "spread": self.spread,
            "output": str(self.output.path),
            "output_state": self.output.status(),
            "accepted": accepted,
            "rejected": rejected,
            "kernel_drops": kernel_drops(self.port),
            "windows_written": self.windows_written,
            "last_window": self.last_window,
        }

    def summary(self) -> str:
        accepted, rejected = self.counters()
        text = (
            f"metrics: {accepted} accepted, {sum(rejected.values())} rejected, "
            f"{self.windows_written} windows"
        )
        condition = self.output.condition()
        return f"{text}, output {condition}" if condition else text


def supervise(settings: Settings) -> MetricsService:
    return MetricsService(settings)
