"""The handler probe's throwaway process, as the supervisor forks it."""

from __future__ import annotations

import subprocess
import sys

# In a process of its own: the hook that signals each forked child cannot be unregistered.
# SIGTERM has a handler that only queues it, as in the supervisor; the probe's child is sent
# one at once after the fork, before it resets its signals.
SIGNALLED_PROBE = """
import os, signal
from skns.executor.probe import probe_handler
signal.signal(signal.SIGTERM, lambda signo, frame: None)
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
print(probe_handler("skns.executor.handlers:sleep"))
"""


def test_a_sigterm_between_the_fork_and_the_signal_reset_stops_the_probe() -> None:
    # Blocked across the fork, it waits in the kernel and takes its default action once
    # the child resets its handlers: not lost to the handler copied from the asker.
    out = subprocess.run(
        [sys.executable, "-c", SIGNALLED_PROBE], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "the process that imported it died (0xf)" in out.stdout, out.stdout
