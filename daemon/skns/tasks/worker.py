"""A worker process: reads jobs from its socket, computes, writes results back.

The pool forks workers from the running server, so :func:`become_worker` first
sheds everything inherited that is not the worker's: signal handlers and the
wakeup fd of the server's event loop, and every file descriptor but the job
socket and stdio (a client connection held open by a worker would outlive its
close in the server). It asks the kernel to SIGKILL it when the server dies, so
workers never outlive their parent.

A worker does its jobs one at a time, in order, and never logs (the journal socket it inherited
is closed): a failure is reported to the server as a result record.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time

from . import protocol, wire
from .digits import decimal_digits

_PR_SET_PDEATHSIG = 1


def become_worker(fd: int, title: str, parent: int) -> None:
    """Run in the forked child with the job socket at ``fd``; exits the process."""
    status = 1
    try:
        _detach(fd, title, parent)
        serve(socket.socket(fileno=3))
        status = 0
    finally:  # whatever happened: never return into the server's code
        os._exit(status)


def die_with_parent(sig: int, parent: int) -> None:
    """Ask the kernel to send ``sig`` when the parent dies (PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _detach(fd: int, title: str, parent: int) -> None:
    die_with_parent(signal.SIGKILL, parent)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group: the server decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if fd != 3:
        os.dup2(fd, 3)
    os.closerange(4, os.sysconf("SC_OPEN_MAX"))  # close_range(2): one system call
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    # Results are converted to text here, off the server's loop, whatever their size.
    sys.set_int_max_str_digits(0)


def serve(sock: socket.socket) -> None:
    """Compute jobs until the server closes the socket."""
    reader = sock.makefile("rb", buffering=65536)
    size = wire.JOB.size
    unpack = wire.JOB.unpack
    while True:
        record = reader.read(size)
        if len(record) < size:
            return
        number, task_id = unpack(record)
        try:
            frame = protocol.success_frame(task_id, decimal_digits(math.factorial(number)))
            status = wire.OK
        except Exception as exc:  # MemoryError above all: the server reports it as failed
            frame = f"{type(exc).__name__}: {exc}".encode()
            status = wire.FAILED
        header = wire.HEADER.pack(status, time.monotonic_ns(), len(frame))
        if len(frame) < 65536:
            sock.sendall(header + frame)
        else:  # no copy of a big frame just to prepend nine bytes
            sock.sendall(header)
            sock.sendall(frame)
