"""The supervisor: forks, watches and restarts the children; talks to systemd.

Modelled on gunicorn's arbiter: single-threaded, no event loop. Signal
handlers only queue the signal and wake the loop; the loop waits (epoll on
the wake-up pipe and the control socket), handles queued signals, reaps dead
children, manages (restarts due children, kills hung ones), lets each
subsystem part do its due work (metrics closes windows), and pings the
watchdog.

Containment: the supervisor's death stops every subsystem, so each step of the
loop runs under ``Faults.guard`` (an exception is logged rate-limited, counted,
shown in status, and the loop goes on), and a subsystem that cannot run (it
cannot be set up, or a child keeps dying at start) is handled by itself: rolled
back to its last good settings if a reload changed them, else stopped until the
next reload. The service exits only when no subsystem is left to run.

The listening sockets are the supervisor's (bound once, inherited by the
children) and, with the metrics memfd, registered in the fd store, so that
they outlive a restart of the supervisor itself: under systemd through its
file descriptor store, without it through a re-exec in place (SIGUSR2,
``skns-ctl restart``), see :mod:`skns.fdstore`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import time
from typing import Any

import psutil

from . import __version__, child, config, jsonexact, logs
from .child import ChildSpec
from .config import Settings
from .control import ControlServer
from .errors import ConfigError, ControlError
from .faults import Faults
from .fdstore import FdStore, reexec
from .instance import InstanceLock
from .listeners import Listeners
from .notify import Notifier
from .settings import Section
from .shm import SlotTable
from .subsystems import NAMES, Part, part

log = logging.getLogger("skns.supervisor")

# Longest wait of one loop turn: bounds how late the loop sees anything it polls.
MAX_WAIT = 0.5
STATUS_EVERY = 2.0
# Slots allocated beyond the children started with, for reloads that add children.
SPARE_SLOTS = 32
# They stop the service, and win over a restart asked for before or with them.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}

# After a fault in the loop itself, pause this long: a fault that repeats must not spin.
FAULT_PAUSE = 0.1


class Fatal(Exception):
    """No subsystem can run: the service stops."""


@dataclasses.dataclass(eq=False)
class Child:
    spec: ChildSpec
    part: Part
    slot_index: int
    pid: int = 0
    started: float = 0.0  # wall clock of the last fork
    started_mono: float = 0.0
    restarts: int = 0
    failures: int = 0  # starts in a row that died within start_period
    due: float = 0.0  # monotonic time of the next start (retired: of the SIGKILL)
    process: psutil.Process | None = None
    cpu_percent: float | None = None  # over the last STATUS_EVERY seconds
    retired: bool = False  # stopped for good (reload removed it)

    @property
    def running(self) -> bool:
        return self.pid > 0


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.started = time.time()
        self.notifier = Notifier()
        self.signals: list[int] = []
        self.stopping = False
        self.restarting = False  # stopping to re-execute in place
        # Takes the fds a previous run passed, before anything binds or forks.
        self.fdstore = FdStore()
        self.listeners = Listeners(self.fdstore)
        self.ready = False
        self.exit_code = 0
        self.last_status = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self.faults = Faults()
        # Subsystems that cannot run as configured, and why (shown in status).
        self.trouble: dict[str, str] = {}
        # Each subsystem's last settings under which all its children came up.
        self.good: dict[str, Section] = {}
        self.reload_error: str | None = None  # the last reload was refused: why
        self.parts: list[Part] = []
        self.children: list[Child] = []
        self.slots: SlotTable | None = None
        self.control: ControlServer | None = None
        # Before any socket is bound: a second instance must not share the UDP port.
        self.lock = InstanceLock(settings.service.state_dir)

    # -- signals: handlers only queue ------------------------------------------

    def _queue_signal(self, signo: int, _frame: object) -> None:
        self.signals.append(signo)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _install_signals(self) -> None:
        for signo in child.SUPERVISOR_SIGNALS:
            signal.signal(signo, self._queue_signal)
        # A re-exec passes them blocked (see _hold_for_restart): one sent meanwhile has
        # waited in the kernel and reaches its handler now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, child.SUPERVISOR_SIGNALS)

    def _hold_for_restart(self) -> dict[str, int] | None:
        """The fds to pass on if the loop ended to re-execute in place, else None.

        From here to the new run's ``_install_signals`` no handler may take a signal: one
        queued now would be lost with this image, and one reaching the new image before
        its handlers would kill it. So the signals are blocked: a stop asked from now on
        stays pending in the kernel, across the exec, which keeps the mask and pending
        signals. One queued before wins over the restart."""
        if not self.restarting or self.exit_code:
            return None
        # Runs the handler of any signal already delivered before it returns.
        signal.pthread_sigmask(signal.SIG_BLOCK, child.SUPERVISOR_SIGNALS)
        if any(signo in STOP_SIGNALS for signo in self.signals):
            log.info("a stop was asked for with the restart: stopping")
            self.restarting = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, child.SUPERVISOR_SIGNALS)
            return None
        return self.fdstore.copies()

    def _stop_pending(self, kept: dict[str, int]) -> bool:
        """Did a stop come while this run stopped for the re-exec? Then the service stops
        there (the shutdown saved everything a stop saves) rather than start again."""
        if not STOP_SIGNALS & signal.sigpending():
            return False
        log.info("a stop was asked for during the restart: not re-executing")
        with self.faults.guard("notify"):
            self.notifier.stopping()
        for fd in kept.values():
            os.close(fd)
        # Left for the next run (see _shutdown); there is none.
        self.settings.service.control_socket.unlink(missing_ok=True)
        return True

    # -- start ---------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; return the process exit status."""
        self._install_signals()
        try:
            self.control = ControlServer(
                self.settings.service.control_socket,
                self._command,
                self.selector,
                self.faults.record,
                self.fdstore,
            )
            for name in NAMES:
                if getattr(self.settings, name).enabled:
                    self._set_up(name)
            if not self.parts and self.trouble:
                raise Fatal("no subsystem can run")
            specs = [(p, s) for p in self.parts for s in p.children()]
            self.slots = SlotTable(len(specs) + SPARE_SLOTS)
            self.children = [Child(s, p, i) for i, (p, s) in enumerate(specs)]
            log.info(
                "skns %s starting %d children (config %s)",
                __version__,
                len(self.children),
                self.settings.path,
            )
            for c in self.children:
                with self.faults.guard(f"starting {c.spec.name}"):  # retried by the loop
                    self._spawn(c)
            self.fdstore.drop_unclaimed()
            self._loop()
        except Fatal as exc:
            log.error("%s: stopping the service", exc)
            self.exit_code = 1
        except ControlError as exc:
            log.error("%s", exc)
            self.exit_code = 1
        except Exception:
            log.exception("supervisor failed")
            self.exit_code = 1
        finally:
            kept = self._hold_for_restart()
            self._shutdown()
        if kept is not None and not self._stop_pending(kept):
            log.info("re-executing in place with %d fds", len(kept))
            reexec(kept)
        return self.exit_code

    def _spawn(self, c: Child) -> None:
        assert self.slots is not None
        slot = self.slots.slots[c.slot_index]
        slot.reset()
        listener = self.listeners.get(c.spec)
        # Stamped before the fork, which takes a while for a big supervisor on a busy host.
        started, started_mono = time.time(), time.monotonic()
        pid = child.fork()  # signals blocked until the child's reset_signals
        if pid == 0:  # the child
            status = 1
            try:
                child.reset_signals()
                self._close_in_child()
                status = child.enter(c.spec, self.settings, slot, listener)
            finally:
                os._exit(status)
        c.pid = pid
        c.started, c.started_mono = started, started_mono
        c.part.child_started(c.spec, c.started)
        log.info("started %s (pid %d)", c.spec.name, pid)

    def _close_in_child(self) -> None:
        """Drop what only the supervisor may hold: the control socket, the wake-up pipe,
        the selector, the instance lock."""
        self.lock.close()
        self.selector.close()
        if self.control is not None:
            for sock in self.control.fds():
                sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        self.next_tick = 0.0
        while not self.stopping:
            faults = self.faults.total
            with self.faults.guard("supervisor loop"):
                self._turn()
            if self.faults.total > faults and not self.stopping:
                time.sleep(FAULT_PAUSE)

    def _turn(self) -> None:
        """One turn of the loop; every step contains its own faults."""
        now = time.time()
        timeout = min(MAX_WAIT, max(0.0, self.next_tick - now), self._until_due())
        due = self.notifier.watchdog_due(time.monotonic())
        if due is not None:
            timeout = min(timeout, due)
        self._wait(timeout)
        with self.faults.guard("signal handling"):
            self._handle_signals()
        if self.stopping:
            return
        with self.faults.guard("reaping children"):
            self._reap()
        if self.stopping:
            return
        with self.faults.guard("managing children"):
            self._manage()
        now = time.time()
        wait = 1.0
        for p in list(self.parts):
            with self.faults.guard(f"{p.name} tick"):
                wait = min(wait, p.tick(now))
        self.next_tick = now + wait
        with self.faults.guard("reporting"):
            self._report()

    def _until_due(self) -> float:
        """Seconds until a child's restart (or a retired child's SIGKILL) is due, so the
        loop wakes at that time and not at its next poll."""
        dues = [c.due for c in self.children if (c.running and c.retired) or self._restartable(c)]
        return max(0.0, min(dues) - time.monotonic()) if dues else MAX_WAIT

    def _wait(self, timeout: float) -> None:
        """Wait for a signal, a control client or ``timeout``; serve what is ready."""
        assert self.control is not None
        for key, _ in self.selector.select(timeout):
            with self.faults.guard("control socket"):
                key.data()
        with self.faults.guard("control socket"):
            self.control.poll(self.settings.service.control_timeout)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _handle_signals(self) -> None:
        while self.signals:
            signo = self.signals.pop(0)
            if signo in STOP_SIGNALS:
                log.info("%s: stopping", signal.Signals(signo).name)
                self.stopping = True
                self.restarting = False  # a stop wins over a restart asked for with it
            elif signo == signal.SIGUSR2 and not self.stopping:
                log.info("SIGUSR2: restarting in place, keeping the sockets and the metrics state")
                self.stopping = self.restarting = True
            elif signo == signal.SIGHUP:
                self._reload()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            c = next((c for c in self.children if c.pid == pid), None)
            if c is None:
                continue
            c.pid = 0
            c.part.child_exited(c.spec)
            if c.retired:
                self.children.remove(c)
            elif not self.stopping:
                self._schedule_restart(c, status)

    def _last_words(self, c: Child) -> str:
        """``: <error>`` when the dead child left the error it failed on in its slot."""
        stats = self._slot_stats(c)
        failed = stats.get("failed") if isinstance(stats, dict) else None
        return f": {failed}" if isinstance(failed, str) else ""

    def _slot_stats(self, c: Child) -> Any:
        """What ``c`` last published in its slot, decoded; None when nothing or not JSON."""
        assert self.slots is not None
        blob = self.slots.slots[c.slot_index].read()
        try:
            return jsonexact.loads(blob) if blob else None
        except jsonexact.JSONDecodeError:
            return None

    def _schedule_restart(self, c: Child, status: int) -> None:
        s = self.settings.service
        ran = time.monotonic() - c.started_mono
        how = (
            f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"exit status {os.WEXITSTATUS(status)}"
        )
        if ran < s.start_period:
            c.failures += 1
            if c.failures >= s.start_failures:
                log.warning("%s %s after %.1fs", c.spec.name, how, ran)
                self._cannot_run(
                    c.spec.subsystem,
                    f"{c.spec.name} died within {s.start_period}s of start {c.failures} times"
                    + self._last_words(c),
                )
                return
            delay = min(s.restart_backoff * 2 ** (c.failures - 1), s.restart_backoff_max)
        else:
            c.failures = 0
            delay = s.restart_backoff
        c.due = time.monotonic() + delay
        c.restarts += 1
        log.warning("%s %s after %.1fs; restart in %.2fs", c.spec.name, how, ran, delay)

    def _manage(self) -> None:
        assert self.slots is not None
        now = time.monotonic()
        timeout = self.settings.service.heartbeat_timeout
        for c in self.children:
            if c.retired:
                if c.running and now >= c.due:
                    log.error("%s did not stop in time: SIGKILL", c.spec.name)
                    self._kill(c, signal.SIGKILL)
                continue
            if not c.running:
                if now >= c.due and self._restartable(c):
                    # If the fork fails, try again after the longest backoff.
                    c.due = now + self.settings.service.restart_backoff_max
                    with self.faults.guard(f"starting {c.spec.name}"):
                        self._spawn(c)
                continue
            if self._silent_for(c) > timeout:
                log.error("%s (pid %d) missed its heartbeat: killing it", c.spec.name, c.pid)
                self._kill(c, signal.SIGKILL)
        for p in self.parts:
            mine = [c for c in self.children if c.part is p and not c.retired]
            if all(self._is_up(c) for c in mine):
                self.good[p.name] = getattr(self.settings, p.name)
        if not self.ready and all(self._is_up(c) for c in self.children if not c.retired):
            self.ready = True
            log.info("all %d children up", len(self.children))
            self.notifier.ready(self._summary())

    def _is_up(self, c: Child) -> bool:
        assert self.slots is not None
        return c.running and self.slots.slots[c.slot_index].is_ready()

    def _kill(self, c: Child, signo: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(c.pid, signo)

    def _silent_for(self, c: Child) -> float:
        """Seconds since the running child ``c`` last beat (or started, if it has not yet)."""
        assert self.slots is not None
        beat = self.slots.slots[c.slot_index].heartbeat_ns() / 1e9
        return time.monotonic() - max(beat, c.started_mono)

    def _healthy(self) -> bool:
        """No running child has gone twice its heartbeat timeout without a beat: one
        that outlives its SIGKILL that long is stuck in the kernel, and the watchdog
        should let systemd restart the whole service."""
        limit = 2 * self.settings.service.heartbeat_timeout
        return all(self._silent_for(c) < limit for c in self.children if c.running)

    def _report(self) -> None:
        now = time.monotonic()
        if self.notifier.watchdog_due(now) == 0.0 and self._healthy():
            self.notifier.ping(now)
        if now - self.last_status >= STATUS_EVERY:
            self.last_status = now
            self._sample_cpu()
            if self.ready:
                self.notifier.status(self._summary())

    def _process(self, c: Child) -> psutil.Process | None:
        """The psutil handle of a running child (kept, so CPU % has a previous sample)."""
        if not c.running:
            return None
        if c.process is None or c.process.pid != c.pid:
            try:
                c.process = psutil.Process(c.pid)
            except (psutil.Error, OSError):
                return None
            c.cpu_percent = None
            c.process.cpu_percent(None)  # the first call only starts the interval
        return c.process

    def _sample_cpu(self) -> None:
        """Every child's CPU % over the last STATUS_EVERY seconds, for status."""
        for c in self.children:
            process = self._process(c)
            if process is not None:
                try:
                    c.cpu_percent = process.cpu_percent(None)
                except (psutil.Error, OSError):  # OSError: out of file descriptors
                    c.cpu_percent = None

    def _summary(self) -> str:
        up = sum(1 for c in self.children if self._is_up(c))
        total = sum(1 for c in self.children if not c.retired)
        restarts = sum(c.restarts for c in self.children)
        words = [f"{up}/{total} children up", f"{restarts} restarts"]
        for p in self.parts:
            with self.faults.guard(f"{p.name} summary"):
                words += [text for text in [p.summary()] if text]
        words += [f"{name} {text.split(':', 1)[0]}" for name, text in self.trouble.items()]
        if self.reload_error:
            words.append("reload refused (config error)")
        if faults := self.faults.summary():
            words.append(faults)
        return "; ".join(words)

    # -- reload ------------------------------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        log.info("reloading %s", self.settings.path)
        self._reopen()
        try:
            new = config.load(self.settings.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.reload_error = str(exc)
            self.notifier.ready(self._summary())
            return
        self.reload_error = None
        old = self.settings
        self.settings = new
        logs.setup(new.service.log_level, "supervisor")
        running = {p.name for p in self.parts}
        for name in NAMES:
            changed = getattr(new, name) != getattr(old, name)
            if name == "metrics" and "metrics" in running:
                if changed:
                    log.warning("[metrics] changed: applies at the next restart of the service")
            elif changed or name in self.trouble:  # a reload retries what could not run
                self._reconfigure(name)
        # Close the sockets of children gone for good (a retired child keeps its own copy).
        self.listeners.keep_only({c.spec.fdname for c in self.children if not c.retired})
        self.notifier.ready(self._summary())

    def _reopen(self) -> None:
        """Reopen the output files by path (after logrotate renamed them): the supervisor's
        own now, its children's (the fleet view's) at their next write."""
        for p in self.parts:
            with self.faults.guard(f"{p.name} reopen"):
                p.reopen()
        assert self.slots is not None
        for c in self.children:
            if c.running:
                self.slots.slots[c.slot_index].ask_reopen()

    def _reconfigure(self, name: str) -> None:
        """Stop subsystem ``name``'s children; start new ones with the new settings unless
        it is now disabled. The new children start only once the old ones have exited
        (see ``_manage``), so they never race them for a port or a journal."""
        self.trouble.pop(name, None)
        self._stop_subsystem(name, "changed: restarting its children")
        if getattr(self.settings, name).enabled:
            self._set_up(name)

    def _stop_subsystem(self, name: str, why: str) -> None:
        """Retire subsystem ``name``'s children (SIGTERM now, SIGKILL after
        graceful_timeout) and drop its part."""
        old_part = next((p for p in self.parts if p.name == name), None)
        if old_part is None:
            return
        log.info("[%s] %s", name, why)
        deadline = time.monotonic() + self.settings.service.graceful_timeout
        for c in self.children:
            if c.part is old_part:
                c.retired = True
                c.due = deadline  # SIGKILL if still running then
                if c.running:
                    self._kill(c, signal.SIGTERM)
        # Those already down are gone for good (the others go when reaped).
        self.children = [c for c in self.children if c.running or not c.retired]
        self.parts.remove(old_part)
        with self.faults.guard(f"{name} stop"):
            old_part.stop()
        # It closed the fds it kept: a restart must not be handed them (nor a re-exec
        # numbers since reused).
        for fdname in getattr(old_part, "fdnames", list)():
            self.fdstore.forget(fdname)

    def _cannot_run(self, name: str, reason: str) -> None:
        """Subsystem ``name`` cannot run as configured: back to the settings it last ran
        with, if a reload changed them since; else stop it until the next reload. The
        other subsystems go on; with none left, the service stops."""
        good = self.good.get(name)
        if good is not None and good != getattr(self.settings, name):
            log.error("[%s] %s: rolling back to its last good settings", name, reason)
            self.settings = dataclasses.replace(self.settings, **{name: good})
            self._reconfigure(name)
            self.trouble[name] = f"rolled back to its last good settings: {reason}"
            return
        log.error("[%s] %s: stopping it until a reload (the others go on)", name, reason)
        self._stop_subsystem(name, "cannot run: stopping its children")
        self.trouble[name] = f"failed: {reason}"
        if not self.parts:
            log.error("no subsystem left to run: stopping the service")
            self.exit_code = 1
            self.stopping = True

    def _set_up(self, name: str) -> None:
        """Make subsystem ``name``'s part and its children (started by ``_manage``; at
        the first start by ``run``)."""
        try:
            new_part = part(name, self.settings, self.fdstore)
        except Exception as exc:
            log.exception("[%s] cannot be set up", name)
            self.trouble[name] = f"failed: cannot be set up: {type(exc).__name__}: {exc}"
            return
        self.parts.append(new_part)
        if self.slots is None:  # the first start: run() allocates the slots
            return
        self.parts.sort(key=lambda p: NAMES.index(p.name))
        assert self.slots is not None
        used = {c.slot_index for c in self.children}
        free = [i for i in range(len(self.slots.slots)) if i not in used]
        specs = new_part.children()
        if len(specs) > len(free):
            log.error(
                "[%s] needs %d children, %d slots left: restart the service",
                name,
                len(specs),
                len(free),
            )
        self.children += [Child(s, new_part, i) for s, i in zip(specs, free, strict=False)]

    def _restartable(self, c: Child) -> bool:
        """Is ``c`` down and waiting only for its due time (not for old children to exit)?"""
        return not c.running and not c.retired and not self._retiring(c.spec.subsystem)

    def _retiring(self, subsystem: str) -> bool:
        """Is a stopped-by-reload child of ``subsystem`` still running?"""
        return any(c.retired and c.running and c.spec.subsystem == subsystem for c in self.children)

    # -- control socket ----------------------------------------------------------

    def _command(self, command: str) -> dict[str, Any]:
        """Answer a control request (an exception is answered by ControlServer)."""
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "reload":
            self._queue_signal(signal.SIGHUP, None)
            return {"ok": True, "message": "reload queued"}
        if command == "restart":
            self._queue_signal(signal.SIGUSR2, None)
            return {"ok": True, "message": "restart queued", "started": self.started}
        if command == "reopen":
            self._reopen()
            return {"ok": True, "message": "output files reopened"}
        return {
            "ok": False,
            "error": f"unknown command {command!r} (status, reload, reopen, restart)",
        }

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "service": {
                "pid": self.pid,
                "version": __version__,
                "state": "stopping" if self.stopping else "running" if self.ready else "starting",
                "started": self.started,
                "uptime": now - self.started,
                "config": str(self.settings.path),
                "state_dir": str(self.settings.service.state_dir),
                "summary": self._summary(),
                "config_error": self.reload_error,
                "faults": self.faults.status(),
                "control": self.control.status() if self.control is not None else None,
            },
            "children": [self._child_status(c, now) for c in self.children if not c.retired],
            "subsystems": {p.name: self._part_status(p) for p in self.parts},
            "trouble": dict(self.trouble),
        }

    def _part_status(self, p: Part) -> dict[str, Any]:
        try:
            return p.status()
        except Exception as exc:
            self.faults.record(f"{p.name} status", exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _child_status(self, c: Child, now: float) -> dict[str, Any]:
        assert self.slots is not None
        row: dict[str, Any] = {
            "subsystem": c.spec.subsystem,
            "role": c.spec.role,
            "index": c.spec.index,
            "name": c.spec.name,
            "pid": c.pid or None,
            "running": c.running,
            "up": self._is_up(c),
            "restarts": c.restarts,
            "started": c.started if c.running else None,
            "uptime": now - c.started if c.running else None,
            "cpus": None,
            "cpu_percent": None,
            "rss": None,
            "stats": None,
        }
        process = self._process(c)
        if process is not None:
            try:
                with process.oneshot():
                    row["cpus"] = process.cpu_affinity()
                    row["cpu_percent"] = c.cpu_percent
                    row["rss"] = process.memory_info().rss
                    row["cpu_seconds"] = sum(process.cpu_times()[:2])
            except (psutil.Error, OSError):  # OSError: out of file descriptors
                pass
        row["stats"] = self._slot_stats(c)
        return row

    # -- stop --------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop children subsystem by subsystem (last started first), then persist."""
        self.stopping = True
        with self.faults.guard("notify"):
            if self.restarting:  # systemd keeps the service up: READY=1 comes from the new run
                self.notifier.reloading()
            else:
                self.notifier.stopping()
        if self.control is not None:
            self.control.close_clients()  # their descriptors may be needed to save state
        deadline = time.monotonic() + self.settings.service.graceful_timeout
        for p in reversed(self.parts):
            mine = [c for c in self.children if c.part is p and c.running]
            for c in mine:
                self._kill(c, signal.SIGTERM)
            self._wait_exit(mine, deadline)
            try:
                p.stop()
            except Exception:
                log.exception("[%s] failed to stop cleanly", p.name)
        leftovers = [c for c in self.children if c.running]
        self._wait_exit(leftovers, deadline)
        self.listeners.close()
        if self.control is not None:
            # Its file stays for the next run when the socket goes on: to the re-exec, or
            # in systemd's fd store (systemd removes the runtime directory at a stop).
            self.control.close(kept=self.restarting or self.fdstore.systemd)
        if self.slots is not None:
            self.slots.close()
        log.info("stopped")
        self.lock.close()

    def _wait_exit(self, group: list[Child], deadline: float) -> None:
        """Reap until every child of ``group`` has exited; SIGKILL them at ``deadline``."""
        while any(c.running for c in group):
            if time.monotonic() >= deadline:
                for c in group:
                    if c.running:
                        log.error("%s did not stop in time: SIGKILL", c.spec.name)
                        self._kill(c, signal.SIGKILL)
                deadline = float("inf")
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
            if pid == 0:
                time.sleep(0.01)
                continue
            for c in self.children:
                if c.pid == pid or pid == -1:
                    c.pid = 0
                    c.part.child_exited(c.spec)
