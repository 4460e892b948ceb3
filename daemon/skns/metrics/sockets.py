"""The workers' UDP sockets: one per worker, all on one port with SO_REUSEPORT.

The supervisor binds them before forking and keeps them open, so a worker's
socket (and the datagrams queued in it) survives the worker's crash; the
restarted worker drains the same queue. The kernel spreads datagrams over the
sockets by a hash of the sender's address and port.
"""

from __future__ import annotations

import logging
import socket

from ..settings import HostPort

log = logging.getLogger("skns.metrics")

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def bind(listen: HostPort, recv_buffer_bytes: int) -> socket.socket:
    """A non-blocking UDP socket on ``listen`` in the port's SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            # Needs CAP_NET_ADMIN; lets the buffer exceed net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, recv_buffer_bytes)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer_bytes)
        sock.bind((listen.host, listen.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_all(listen: HostPort, count: int, recv_buffer_bytes: int) -> list[socket.socket]:
    """``count`` sockets on one port; an ephemeral port (0) is resolved by the first."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(bind(listen, recv_buffer_bytes))
            listen = HostPort(listen.host, socks[0].getsockname()[1])
    except OSError:
        for s in socks:
            s.close()
        raise
    granted = socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < recv_buffer_bytes:
        log.warning(
            "UDP receive buffer is %d bytes, not the %d configured: raise net.core.rmem_max "
            "or grant CAP_NET_ADMIN (see README, troubleshooting)",
            granted,
            recv_buffer_bytes,
        )
    return socks


def kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped on sockets bound to ``port`` (full buffers), from
    /proc/net/udp and udp6. Counts only sockets open now."""
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f, None)
                for row in f:
                    fields = row.split()
                    if len(fields) >= 13 and int(fields[1].rpartition(":")[2], 16) == port:
                        drops += int(fields[12])
        except OSError:
            continue
    return drops
