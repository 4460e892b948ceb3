"""Free loopback TCP ports, for the throwaway servers of tests, benchmarks and local runs.

A port is free when it is asked for; whoever binds it next gets it, so a caller binds it
soon after. Ports wanted together are bound at once, so the n are distinct.
"""

from __future__ import annotations

import contextlib
import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback TCP ports free right now (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    """One loopback TCP port free right now."""
    return free_ports(1)[0]
