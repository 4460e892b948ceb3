"""Does the configured handler import and is it callable? Asked in a throwaway process.

``check-config`` and a reload must refuse a handler that would make every shard die at
start (a typo such as ``skns.executor.handlers:slep``). The answer is found in a forked
child, never in the asking process: the supervisor must not import a handler's module
itself, or the shards it forks later would run that copy even after the module was
changed on disk; and a module whose import hangs or crashes costs only the child.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import time

TIMEOUT = 10.0
_MAX_REASON = 2000


def probe_handler(spec: str, timeout: float = TIMEOUT) -> str | None:
    """Why the handler ``spec`` (``module:function``) cannot be loaded, or None if it can."""
    from ..child import fork, reset_signals  # here: skns-ctl does without asyncio

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = fork()  # signals blocked until reset_signals: the asker may be the supervisor
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        status = 0
        try:
            reset_signals()
            os.close(r)
            from .handlers import resolve

            resolve(spec)
        except BaseException as exc:  # whatever the module's import raises
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            os.write(w, reason.encode(errors="replace")[:_MAX_REASON])
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    try:
        return _answer(r, pid, spec, timeout)
    finally:
        os.close(r)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _answer(r: int, pid: int, spec: str, timeout: float) -> str | None:
    chunks = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(r, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                os.kill(pid, signal.SIGKILL)
                return f"handler {spec!r}: importing it took more than {timeout:g}s"
            chunk = os.read(r, _MAX_REASON)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if chunks:
        return b"".join(chunks).decode(errors="replace")
    if status != 0:
        return f"handler {spec!r}: the process that imported it died ({status:#x})"
    return None
