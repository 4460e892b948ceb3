"""What a subsystem gives the supervisor, and what a child gets back.

A subsystem's ``service`` module exposes ``children(settings) -> list[ChildSpec]``.
The supervisor forks one process per spec and calls ``spec.target(ctx)`` in
it, after the fork: the target makes its own event loop, sockets and database
connections. When the target returns the child exits 0; when it raises, the
error is logged and the child exits 1 (and is restarted with backoff).

A child calls :meth:`ChildContext.ready` once it serves. Children are stopped
with SIGTERM. An asyncio child uses :meth:`ChildContext.serve`,
which turns SIGTERM/SIGINT into an :class:`asyncio.Event`, heartbeats from the
loop itself (a blocked loop stops beating and the supervisor restarts the
child), and publishes the child's stats for ``skns-ctl status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from . import jsonexact

if TYPE_CHECKING:
    import socket

    from .config import Settings
    from .settings import HostPort
    from .shm import Slot


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """One process the supervisor keeps running."""

    subsystem: str  # "metrics", "relay", ...
    role: str  # process title and status label: "udp-worker", "relay", "executor-shard"
    index: int  # 0-based within the role
    target: Callable[[ChildContext], None]
    cpus: tuple[int, ...] | None = None  # pin to these CPUs
    # A TCP address the child serves: the supervisor binds it (once, kept across restarts
    # of the child and of itself) and hands the listening socket over as ctx.listener.
    listen: HostPort | None = None

    @property
    def name(self) -> str:
        return f"{self.role} {self.index}"

    @property
    def fdname(self) -> str:
        """Its listening socket's name in the fd store."""
        return f"tcp-{self.subsystem}-{self.index}"


StatsFn = Callable[[], Mapping[str, Any]]
MainFn = Callable[[asyncio.Event], Awaitable[None]]


class ChildContext:
    """Handed to ``ChildSpec.target`` in the child process."""

    def __init__(
        self,
        spec: ChildSpec,
        settings: Settings,
        slot: Slot,
        listener: socket.socket | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.slot = slot
        # The listening socket of spec.listen, when the supervisor bound it; None: bind it.
        self.listener = listener
        self._nudge: asyncio.Event | None = None  # set: beat and publish now (in serve)

    def heartbeat(self) -> None:
        """Tell the supervisor this child is alive; call at least every second or so."""
        self.slot.beat()

    def ready(self) -> None:
        """Tell the supervisor this child now serves (its socket is bound, its journal
        replayed). The service is READY once every child is; heartbeats, which say only
        that the child is alive, may start earlier."""
        self.slot.mark_ready()

    def reopens(self) -> int:
        """How many times the supervisor asked its children to reopen their output files
        (``skns-ctl reopen``, SIGHUP after logrotate) since this child started. A child
        that appends to a file reopens it by path once this has changed since it opened
        it (:meth:`skns.metrics.output.Output.reopen`), at its next write."""
        return self.slot.reopens()

    def publish(self, stats: Mapping[str, Any]) -> None:
        """Publish counters (JSON-able, under 16 KiB) for ``skns-ctl status``."""
        self.slot.publish(jsonexact.dumps(stats, option=orjson.OPT_NON_STR_KEYS))

    def publish_soon(self) -> None:
        """Publish the stats at once, not at the next interval: a figure someone waits on
        has changed. Does nothing outside :meth:`serve`."""
        if self._nudge is not None:
            self._nudge.set()

    def serve(self, main: MainFn, stats: StatsFn | None = None, interval: float = 0.5) -> None:
        """Run ``main(stop)`` on a fresh uvloop until it returns.

        ``stop`` is set on SIGTERM or SIGINT; ``main`` should then finish what
        it holds and return. Heartbeat and stats go out every ``interval`` s.
        """
        import uvloop

        async def runner() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)

            nudge = self._nudge = asyncio.Event()

            async def beat() -> None:
                while True:
                    self.heartbeat()
                    if stats is not None:
                        self.publish(stats())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(nudge.wait(), interval)
                    nudge.clear()

            beater = asyncio.create_task(beat())
            try:
                await main(stop)
            finally:
                beater.cancel()
                if stats is not None:
                    self.publish(stats())

        uvloop.run(runner())


# The signals the supervisor handles (queues for its loop); a child starts with the defaults.
SUPERVISOR_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR2)


def fork() -> int:
    """``os.fork`` with SUPERVISOR_SIGNALS blocked across it, for a process that handles them.

    A signal reaching the child before it calls :func:`reset_signals` would run the parent's
    handler copied there (the supervisor's only queues it, for a loop the child does not run)
    and be lost: a SIGTERM would not stop the child. Blocked, it waits in the kernel and acts
    once the child's reset unblocks it. The parent gets its mask back; the child keeps them
    blocked and must call :func:`reset_signals`."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def reset_signals() -> None:
    """Undo the supervisor's signal handling in a freshly forked child: the default
    actions, then unblocked (the supervisor forks with them blocked; one sent meanwhile
    acts now, with its default action)."""
    for sig in SUPERVISOR_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM us if the supervisor dies (PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def enter(
    spec: ChildSpec, settings: Settings, slot: Slot, listener: socket.socket | None = None
) -> int:
    """Everything a child does between the fork and its exit; returns the exit status.

    The supervisor resets ``slot`` before the fork, calls this in the forked
    child and passes the result to ``os._exit``; tests may do the same.
    """
    import logging

    import psutil
    import setproctitle

    from . import logs

    reset_signals()
    _die_with_parent()
    setproctitle.setproctitle(f"skns-metrics: {spec.name}")
    logs.setup(settings.service.log_level, spec.role, spec.index)
    log = logging.getLogger(f"skns.{spec.subsystem}")
    if spec.cpus is not None:
        try:
            psutil.Process().cpu_affinity(list(spec.cpus))
        except (OSError, ValueError) as exc:
            log.warning("cannot pin to CPUs %s: %s", spec.cpus, exc)
    try:
        spec.target(ChildContext(spec, settings, slot, listener))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        log.exception("%s failed", spec.name)
        # Its last words for the supervisor, which names them if it gives up on the child.
        slot.publish(jsonexact.dumps({"failed": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0
