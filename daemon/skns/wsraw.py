"""A bare WebSocket client socket, for the benchmarks and tests of clients that stop reading.

A real client reads whatever arrives; these sockets upgrade and then read nothing more, with
a receive buffer set small before connecting (shrinking it later makes the kernel drop the
segments that carry the server's acks).
"""

from __future__ import annotations

import base64
import os
import socket


def upgrade_request(path: str = "/") -> bytes:
    """The HTTP request that opens a WebSocket connection to ``path``."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def upgraded(port: int, rcvbuf: int = 4096, timeout: float = 10.0) -> socket.socket | None:
    """A socket to 127.0.0.1:``port`` past its 101 and not one byte further; None (closed)
    if the server answered anything else."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)  # one at a time: not one byte of a frame
        if not byte:
            break
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        return None
    return sock
