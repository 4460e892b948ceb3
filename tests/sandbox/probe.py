"""Do what the skns service does that a sandbox can break, inside sandbox.py's sandbox.

Run with the installed venv's python. Exits 0 and prints ``probe ok`` when every step
works and the sandbox is shown to be in force (a step the sandbox must refuse is refused);
otherwise a traceback names the step.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import sqlite3
import sys
import tempfile

RECV_BUFFER = 32 * 1024 * 1024
SO_RCVBUFFORCE = 33
NR_PERF_EVENT_OPEN = 298  # x86_64; only used to show the syscall allow list is in force


def expect_errno(code: int, what: str, call) -> None:
    try:
        call()
    except OSError as exc:
        assert exc.errno == code, f"{what}: {exc} (expected {errno.errorcode[code]})"
    else:
        raise AssertionError(f"{what} succeeded: the sandbox is not in force")


def sandbox_in_force() -> None:
    wx = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    expect_errno(errno.EPERM, "W|X mmap", lambda: mmap.mmap(-1, 4096, prot=wx))
    expect_errno(errno.EAFNOSUPPORT, "netlink socket", lambda: socket.socket(socket.AF_NETLINK))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        set_force = lambda: udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)  # noqa: E731
        expect_errno(errno.EPERM, "SO_RCVBUFFORCE without CAP_NET_ADMIN", set_force)
    if os.uname().machine == "x86_64":
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall(NR_PERF_EVENT_OPEN, None, 0, -1, -1, 0)
        got = ctypes.get_errno()
        assert rc == -1 and got == errno.EPERM, f"perf_event_open: {rc}, {errno.errorcode[got]}"


def dependencies() -> None:
    import aiohttp  # noqa: F401
    import orjson
    import psutil  # noqa: F401
    import psycopg
    import psycopg_pool  # noqa: F401
    import setproctitle
    import uvloop  # noqa: F401
    import websockets  # noqa: F401
    from systemd import daemon, journal  # noqa: F401

    from skns import child, config, shm  # noqa: F401

    assert orjson.loads(orjson.dumps({"A1": 1})) == {"A1": 1}
    assert psycopg.pq.__impl__ in ("binary", "c"), psycopg.pq.__impl__
    setproctitle.setproctitle("skns-metrics: probe")


def ctypes_callback() -> None:
    """libffi closures need executable memory: MemoryDenyWriteExecute must not stop them."""
    libc = ctypes.CDLL(None)
    pointer = ctypes.POINTER(ctypes.c_int)
    compare = ctypes.CFUNCTYPE(ctypes.c_int, pointer, pointer)
    values = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    libc.qsort(values, 5, ctypes.sizeof(ctypes.c_int), compare(lambda a, b: a[0] - b[0]))
    assert list(values) == [1, 2, 3, 4, 5], list(values)


def fork_pin_share() -> None:
    """A child pinned to one CPU writes into an anonymous shared mapping the parent reads."""
    import psutil

    shared = mmap.mmap(-1, 4096, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    cpu = min(os.sched_getaffinity(0))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.sched_setaffinity(0, {cpu})
            shared[:8] = (os.sched_getaffinity(0).pop() + 1).to_bytes(8, "little")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the pinned child failed"
    assert int.from_bytes(shared[:8], "little") == cpu + 1
    me = psutil.Process()
    assert me.cpu_affinity() and me.memory_info().rss > 0
    me.cpu_percent()


def udp_socket() -> None:
    """The metrics worker's socket: SO_REUSEPORT and a big SO_RCVBUF (capped by rmem_max)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        udp.bind(("127.0.0.1", 0))
        udp.sendto(b'{"A1":1,"A2":2,"A3":3}', udp.getsockname())
        assert udp.recv(2048).startswith(b"{")


async def websocket_and_http() -> None:
    import aiohttp
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
    async with aiohttp.ClientSession():
        pass


def sqlite_file() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "probe.db"))
        db.execute("pragma journal_mode=wal")
        db.execute("create table t (x)")
        db.execute("insert into t values (1)")
        db.commit()
        db.close()


def main() -> int:
    import uvloop

    sandbox_in_force()
    dependencies()
    ctypes_callback()
    fork_pin_share()
    udp_socket()
    uvloop.run(websocket_and_http())
    sqlite_file()
    print("probe ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
