"""The fd store: what systemd receives (real datagram socket, real SCM_RIGHTS), and what
a process started with LISTEN_FDS finds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from helpers import AS_LISTEN_PID, passing_fds
from skns.fdstore import FdStore


@pytest.fixture
def manager(tmp_path, monkeypatch):
    """A unix datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> tuple[dict[str, str], list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 4096, 16)
    return dict(line.split("=", 1) for line in data.decode().splitlines()), fds


def test_keep_uploads_the_fd_with_its_name_and_forget_removes_it(manager):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    store = FdStore({"NOTIFY_SOCKET": "set"})
    store.keep("udp-metrics-0", udp.fileno())
    fields, fds = receive(manager)
    assert fields == {"FDSTORE": "1", "FDNAME": "udp-metrics-0"}
    assert len(fds) == 1
    # The fd systemd got is the same socket, not a copy of its address.
    assert os.fstat(fds[0]).st_ino == os.fstat(udp.fileno()).st_ino
    got = socket.socket(fileno=fds[0])
    assert got.getsockname() == udp.getsockname()
    got.close()

    store.forget("udp-metrics-0")
    fields, fds = receive(manager)
    assert fields == {"FDSTOREREMOVE": "1", "FDNAME": "udp-metrics-0"}
    assert fds == []
    assert store.held == {}
    udp.close()


def test_without_notify_socket_nothing_is_sent(manager):
    store = FdStore({})
    r, w = os.pipe()
    store.keep("x", r)
    manager.settimeout(0.2)
    with pytest.raises(TimeoutError):
        manager.recv(100)
    assert store.held == {"x": r}
    os.close(r)
    os.close(w)


def test_a_refused_upload_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    r, w = os.pipe()
    FdStore({"NOTIFY_SOCKET": "set"}).keep("x", r)
    assert "systemd did not take FDSTORE=1 FDNAME=x" in caplog.text
    os.close(r)
    os.close(w)


# Run in a fresh process, as systemd (or a re-exec) would start the service: the fds at
# 3.., LISTEN_PID its own pid (exec keeps the shell's pid).
PROBE = """
import os
from skns.fdstore import FdStore
store = FdStore()
fds = [fd for fd in (store.take(n) for n in ("a", "b", "unknown")) if fd is not None]
print(sorted(store.held))
print(" ".join(os.read(fd, 10).decode() for fd in fds))
print(any(os.get_inheritable(fd) for fd in fds), "LISTEN_FDS" in os.environ)
"""


def run_probe(names: list[str], env: dict[str, str] | None = None) -> list[str]:
    pipes = [os.pipe(), os.pipe()]
    for i, (_, w) in enumerate(pipes):
        os.write(w, b"AB"[i : i + 1] * 3)
    run_env = {**os.environ, **(env or {})}
    passing = passing_fds({name: r for name, (r, _) in zip(names, pipes, strict=True)}, run_env)
    run_env["LISTEN_FDNAMES"] = run_env["LISTEN_FDNAMES"].rstrip(":")
    out = subprocess.run(
        [*AS_LISTEN_PID, sys.executable, "-c", PROBE],
        env=run_env,
        **passing,
        capture_output=True,
        text=True,
        timeout=30,
    )
    for r, w in pipes:
        os.close(r)
        os.close(w)
    return out.stdout.splitlines() + out.stderr.splitlines()


def test_fds_are_found_by_name_and_the_variables_removed():
    out = run_probe(["a", "b"])
    assert out == ["['a', 'b']", "AAA BBB", "False False"]


def test_fds_meant_for_another_pid_are_not_taken():
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.splitlines() == ["[]", "", "False False"], out.stderr


def test_a_nameless_fd_is_unknown():
    out = run_probe(["a", ""])
    assert out == ["['a', 'unknown']", "AAA BBB", "False False"]


def test_pass_on_places_the_fds_from_3_and_describes_them():
    script = """
import os, socket, sys
from skns import fdstore
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("127.0.0.1", 0))
name = a.getsockname()
r, w = os.pipe()
os.write(w, b"state")
# The socket sits at 3 and the pipe at 4: placing one must not overwrite the other.
held = {"m": r, "u": a.fileno()}
env = {}
fdstore.pass_on(held, env)
print(env["LISTEN_FDS"], env["LISTEN_FDNAMES"], env["LISTEN_PID"] == str(os.getpid()))
s4 = socket.socket(fileno=4)
print(os.read(3, 5).decode(), s4.getsockname() == name)
print(os.get_inheritable(3), os.get_inheritable(4))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["2 m:u True", "state True", "True True"], out.stderr


def test_a_held_fd_found_closed_is_left_out_of_a_re_exec(caplog):
    store = FdStore({})
    r, w = os.pipe()
    store.keep("open", r)
    store.keep("gone", w)
    os.close(w)
    copies = store.copies()
    assert list(copies) == ["open"]
    assert "gone (fd" in caplog.text
    for fd in (r, *copies.values()):
        os.close(fd)
