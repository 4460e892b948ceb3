"""The workers' UDP sockets: one per worker, all on one port with SO_REUSEPORT.

The supervisor binds them before forking and keeps them open, so a worker's
socket (and the datagrams queued in it) survives the worker's crash; the
restarted worker drains the same queue.

By default the kernel picks a group's socket by a hash of the sender's address
and port, so one busy sender lands on one worker. :func:`spread` attaches a
classic BPF program to the group that picks a socket at random for every
datagram instead, so one sender is shared by every worker.
"""

from __future__ import annotations

import ctypes
import logging
import socket
from typing import TYPE_CHECKING

from ..listeners import claim, family_of
from ..settings import HostPort

if TYPE_CHECKING:
    from ..fdstore import FdStore

log = logging.getLogger("skns.metrics")

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)

# Classic BPF opcodes (linux/filter.h) and the ancillary load of a random u32.
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_ALU_MOD_K = 0x04 | 0x90 | 0x00  # BPF_ALU | BPF_MOD | BPF_K
_RET_A = 0x06 | 0x10  # BPF_RET | BPF_A
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RANDOM


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _set_buffer(sock: socket.socket, recv_buffer_bytes: int) -> None:
    try:
        # Needs CAP_NET_ADMIN; lets the buffer exceed net.core.rmem_max.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, recv_buffer_bytes)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer_bytes)


def bind(listen: HostPort, recv_buffer_bytes: int) -> socket.socket:
    """A non-blocking UDP socket on ``listen`` in the port's SO_REUSEPORT group."""
    sock = socket.socket(family_of(listen), socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _set_buffer(sock, recv_buffer_bytes)
        sock.bind((listen.host, listen.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def socket_name(i: int) -> str:
    """Worker ``i``'s socket in the fd store."""
    return f"udp-metrics-{i}"


def bind_all(
    listen: HostPort, count: int, recv_buffer_bytes: int, store: FdStore | None = None
) -> list[socket.socket]:
    """``count`` sockets on one port; an ephemeral port (0) is resolved by the first.

    Sockets kept from before a restart (in ``store``) are taken back with the
    datagrams queued in them, when still bound to ``listen``; new ones join
    them and are registered in ``store``. Kept sockets beyond ``count`` are left
    unclaimed (the store closes them)."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = claim(store, socket_name(i), socket.SOCK_DGRAM, listen)
            if sock is not None:
                _set_buffer(sock, recv_buffer_bytes)
            else:
                sock = bind(listen, recv_buffer_bytes)
                if store is not None:
                    store.keep(socket_name(i), sock.fileno())
            socks.append(sock)
            listen = HostPort(listen.host, socks[0].getsockname()[1])
    except OSError:
        for i, s in enumerate(socks):
            if store is not None:
                store.forget(socket_name(i))
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


def spread(socks: list[socket.socket]) -> str:
    """Make the group of ``socks`` pick a socket at random per datagram: "cbpf", or
    "hash" (the kernel's default, by sender) when the kernel refuses the program.

    The program returns an index into the group, whose order is the bind order;
    an index past the group's end would fall back to hashing, so ``mod`` keeps it
    below ``len(socks)``. The program belongs to the group, not to one socket:
    it stays while any of the supervisor's sockets is open, across worker restarts.
    """
    program = (_SockFilter * 3)(
        _SockFilter(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        _SockFilter(_ALU_MOD_K, 0, 0, len(socks)),
        _SockFilter(_RET_A, 0, 0, 0),
    )
    fprog = _SockFprog(len(program), program)
    try:
        socks[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
    except OSError as exc:
        log.warning(
            "cannot spread datagrams over workers per packet (%s): by sender address instead, "
            "so one sender is served by one worker",
            exc,
        )
        return "hash"
    return "cbpf"


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
