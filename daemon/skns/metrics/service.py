"""The metrics subsystem in the supervisor: sockets and shared memory made
before the fork, one pinned UDP worker per CPU, windows closed and written here.

What a restart must keep lives outside the process: the UDP sockets (with the
datagrams queued in them) and the memfd of :mod:`.state` (the open windows'
partials, the longer intervals' totals), both registered in the fd store. At
start the kept memfd is the one source of truth; the state file written at a
graceful stop is read only when there is no memfd (a cold start)."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..child import ChildContext, ChildSpec
from ..files import write_atomic
from . import fleetspool, worker
from .closer import Closer
from .output import Output, last_lines, missing
from .partials import REASONS, RING, Block
from .sockets import bind_all, kernel_drops, socket_name, spread
from .state import FDNAME, StateMemory, StateTooLarge
from .window import Aggregate, Schedule, end_of, index_of, label

if TYPE_CHECKING:
    import socket

    from ..config import Settings
    from ..fdstore import FdStore

log = logging.getLogger("skns.metrics")

STATE_FILE = "metrics-state.json"
# How often to look again while a worker has not yet passed a window's end.
_RECHECK = 0.01


def _worker_main(sock: socket.socket, block: Block, ctx: ChildContext) -> None:
    worker.run(ctx, sock, block)


def _fleet_main(ctx: ChildContext) -> None:
    from . import fleet  # imports nats: only with [cluster] and fleet_output set

    fleet.run(ctx)


def worker_count(settings: Settings) -> int:
    return settings.metrics.workers or len(os.sched_getaffinity(0))


class MetricsService:
    name = "metrics"

    def __init__(self, settings: Settings, store: FdStore | None = None) -> None:
        m = settings.metrics
        self.settings = settings
        self.store = store
        self.count = worker_count(settings)
        self.cpus = sorted(os.sched_getaffinity(0))
        self.sockets = bind_all(m.listen, self.count, m.recv_buffer_bytes, store)
        self.port = self.sockets[0].getsockname()[1]
        self.spread = spread(self.sockets)
        self.schedule = Schedule(m.window, m.intervals)
        self.output = Output(m.output)
        self.state_path = settings.service.state_dir / STATE_FILE
        self.alive = [False] * self.count
        self.started = [0.0] * self.count
        self.windows_written = 0
        self.last_window: dict[str, Any] | None = None
        self._save_failed = False
        # The fleet view: base lines spooled for the fleet child to publish.
        fleet = settings.cluster.enabled and m.fleet_path is not None
        self.fleet_spool = fleetspool.spool_dir(settings.service.state_dir) if fleet else None
        if m.fleet_path is not None and not settings.cluster.enabled:
            log.warning("metrics.fleet_output is set but [cluster] is not: no fleet view")
        self.spool_errors = 0
        self.spool_failing = False
        # Windows dropped from the spool unpublished, older than the stream would keep.
        self.spool_expired = 0
        self.spool_keep = max(1, int(fleetspool.KEEP // self.schedule.base))
        now = index_of(time.time(), m.window)
        self.closer = Closer(self.schedule, now)
        kept = self._kept_memory()
        if kept is not None and kept.workers == self.count:
            self.memory = kept  # the workers continue in the blocks they wrote
        else:
            if kept is not None:
                log.info(
                    "the kept metrics state is for %d workers, now %d: its partials carried over",
                    kept.workers,
                    self.count,
                )
            self.memory = StateMemory.create(self.count)
            if store is not None:
                store.forget(FDNAME)
                store.keep(FDNAME, self.memory.fd)
        self.partials = self.memory.partials
        state = self._state_from(kept, now) if kept is not None else self._state_file()
        if kept is not None and kept is not self.memory:
            kept.close()
        if state is not None:
            try:
                lines = self.closer.restore(state, now)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("ignoring the metrics state of the previous run: %s", exc)
            else:
                # Lines the previous run closed but had not written (a full disk, a crash
                # between saving and writing), oldest first.
                lines = self._unwritten(state.get("unwritten", [])) + lines
                self._save(lines)
                self._write(lines)
                log.info("resumed the metrics state: %d line(s) owed", len(lines))
                return
        self._save()

    # -- state across restarts ---------------------------------------------

    def _kept_memory(self) -> StateMemory | None:
        fd = self.store.take(FDNAME) if self.store is not None else None
        if fd is None:
            return None
        try:
            return StateMemory.attach(fd)
        except (OSError, ValueError) as exc:
            log.error("ignoring the kept metrics state: %s", exc)
            assert self.store is not None
            self.store.forget(FDNAME)
            os.close(fd)
            return None

    def _state_file(self) -> dict[str, Any] | None:
        """The state a graceful stop saved, when no memfd was kept (a cold start)."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s: %s", self.state_path, exc)
            return None
        finally:
            # Read once: a crash after this point must not replay the same windows.
            self.state_path.unlink(missing_ok=True)
        if not isinstance(state, dict) or not isinstance(state.get("windows"), dict):
            log.error("ignoring %s: not a metrics state", self.state_path)
            return None
        tail = last_lines(self.output.path, 1)
        written = float(tail[0]["timestamp"]) if tail else float("-inf")  # type: ignore[arg-type]
        state["windows"] = {
            w: a
            for w, a in state["windows"].items()
            if end_of(int(w), self.schedule.base) > written
        }
        return state

    def _state_from(self, kept: StateMemory, now: int) -> dict[str, Any] | None:
        """The state of the run that left ``kept``: its saved closer state, with the
        windows it ran for since, merged from its workers' blocks."""
        self.state_path.unlink(missing_ok=True)  # the memfd is newer: one source of truth
        try:
            state = kept.load()
            if state is None:
                return None
            self._wait_gone([b.owner() for b in kept.partials.blocks])
            windows = {int(w): Aggregate.from_list(a) for w, a in state["windows"].items()}
            first = int(state["next"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring the kept metrics state: %s", exc)
            return None
        # The windows the previous run was up for: up to its workers' last watermark. The
        # current one stays in the blocks when the workers continue in them.
        seen = max((b.watermark() for b in kept.partials.blocks), default=0.0)
        last = min(index_of(seen, self.schedule.base), now - 1 if kept is self.memory else now)
        for w in range(max(first, last - RING + 1), last + 1):
            agg = windows.setdefault(w, Aggregate())
            for i, block in enumerate(kept.partials.blocks):
                part = block.read(w)
                if part is None:
                    log.error("worker %d's kept partial for window %d was overwritten: lost", i, w)
                else:
                    agg.merge(part)
        state["windows"] = {str(w): agg.as_list() for w, agg in windows.items()}
        return state

    def _wait_gone(self, pids: list[int]) -> None:
        """Until the previous run's workers have exited (they die with their supervisor;
        under systemd they are gone already): two writers must never share a block."""
        deadline = time.monotonic() + self.settings.service.graceful_timeout
        for pid in pids:
            while pid > 0 and _alive(pid):
                if time.monotonic() > deadline:
                    log.error("a previous worker (pid %d) is still running: going on", pid)
                    return
                time.sleep(0.01)

    def _unwritten(self, unwritten: list[str]) -> list[str]:
        """Of the lines the previous run had not written (as it last knew), those the
        output still lacks: it may have written some after saving its state."""
        return missing(unwritten, last_lines(self.output.path, 1)) if unwritten else []

    def _save(self, lines: list[str] | None = None) -> None:
        """Save the closer's state to the memfd, at every change (a kill -9 loses nothing),
        with the lines not yet written: those the output holds back, then ``lines``,
        about to be written."""
        state = self.closer.snapshot({})
        state["next"] = self.closer.next
        held = [line.decode().rstrip("\n") for line in self.output.pending]
        state["unwritten"] = held + (lines or [])
        try:
            self.memory.save(state)
        except StateTooLarge as exc:
            # Many lines held back by a full disk: keep the state, lose those on a crash.
            if not self._save_failed:
                log.error("%s: a crash would lose the %d line(s) held back", exc, len(held))
            self._save_failed = True
            state["unwritten"] = lines or []
            self.memory.save(state)
        else:
            self._save_failed = False

    def fdnames(self) -> list[str]:
        """What it keeps in the fd store (the supervisor forgets them when it stops the
        subsystem alone; at a stop of the service they stay for the next start)."""
        return [*(socket_name(i) for i in range(self.count)), FDNAME]

    def _pending(self, upto: int) -> dict[int, Aggregate]:
        return {w: self._merged(w) for w in range(self.closer.next, upto + 1)}

    def stop(self) -> None:
        """The workers have stopped: save the state for the next start, in the memfd
        (kept by systemd or passed by a re-exec) and in the state file (a cold start)."""
        now = index_of(time.time(), self.schedule.base)
        self.tick(time.time())
        self._save()
        state = self.closer.snapshot(self._pending(max(now, self.closer.next)))
        state["unwritten"] = [line.decode().rstrip("\n") for line in self.output.pending]
        self.output.close()
        for s in self.sockets:
            s.close()
        self.memory.close()
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
        fleet = [ChildSpec("metrics", "fleet", 0, _fleet_main)] if self.fleet_spool else []
        return [
            ChildSpec(
                subsystem="metrics",
                role="udp-worker",
                index=i,
                target=functools.partial(_worker_main, self.sockets[i], self.partials.blocks[i]),
                cpus=(self.cpus[i % len(self.cpus)],),
            )
            for i in range(self.count)
        ] + fleet

    def child_started(self, spec: ChildSpec, started: float) -> None:
        if spec.role != "udp-worker":
            return
        self.alive[spec.index] = True
        self.started[spec.index] = started

    def child_exited(self, spec: ChildSpec) -> None:
        if spec.role != "udp-worker":
            return
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
        retry = self.output.retry if not self.output.flush() else float("inf")
        base = self.schedule.base
        while True:
            w = self.closer.next
            end = end_of(w, base)
            if now < end:
                return min(end - now, retry)
            if not all(self._passed(i, end) for i in range(self.count)):
                return _RECHECK
            lines = self.closer.close(w, self._merged(w))
            self._save(lines)  # first: lines saved but not written are written at restart
            self._write(lines)
            self.windows_written += 1

    def _write(self, lines: list[str]) -> None:
        shortest = label(self.schedule.intervals[0])
        for text in lines:
            row = json.loads(text)
            if row["count_type"] == shortest:
                self.last_window = row
                self._spool(row, text)
        self.output.write(lines)

    def _spool(self, row: dict[str, Any], text: str) -> None:
        """Hand a base line to the fleet child (first: a crash after it republishes,
        which JetStream's message id makes harmless)."""
        if self.fleet_spool is None:
            return
        w = round(float(row["timestamp"]) / self.schedule.base) - 1
        try:
            fleetspool.put(self.fleet_spool, w, text)
        except OSError as exc:
            if not self.spool_failing:  # once per outage: the count is in status
                log.error("cannot spool window %s for the fleet view: %s", row["timestamp"], exc)
            self.spool_failing = True
            self.spool_errors += 1
        else:
            if self.spool_failing:
                log.warning("spooling windows for the fleet view again")
            self.spool_failing = False
            gone = fleetspool.prune(self.fleet_spool, w, self.spool_keep)
            if gone and not self.spool_expired:  # once: the count is in status
                log.warning(
                    "the fleet spool holds %.0f s of unpublished windows: dropping the oldest",
                    fleetspool.KEEP,
                )
            self.spool_expired += gone

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
            "fleet_spool_errors": self.spool_errors,
            "fleet_spool_expired": self.spool_expired,
        }

    def summary(self) -> str:
        accepted, rejected = self.counters()
        text = (
            f"metrics: {accepted} accepted, {sum(rejected.values())} rejected, "
            f"{self.windows_written} windows"
        )
        condition = self.output.condition()
        return f"{text}, output {condition}" if condition else text


def _alive(pid: int) -> bool:
    """Is ``pid`` a running process (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def supervise(settings: Settings, store: FdStore | None = None) -> MetricsService:
    return MetricsService(settings, store)
