"""The supervisor's listening sockets: bound once, kept when they still fit, rebound when not."""

from __future__ import annotations

import socket

from skns.child import ChildSpec
from skns.fdstore import FdStore
from skns.listeners import Listeners, bound_to, claim, tcp_listener
from skns.settings import HostPort


def target(_ctx) -> None:
    pass


def spec(address: HostPort) -> ChildSpec:
    return ChildSpec("tasks", "tasks", 0, target, listen=address)


def test_bound_to_checks_kind_address_and_listening():
    tcp = tcp_listener(None, "t", HostPort("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    assert bound_to(tcp, socket.SOCK_STREAM, HostPort("127.0.0.1", port))
    assert bound_to(tcp, socket.SOCK_STREAM, HostPort("127.0.0.1", 0))  # port 0: any
    assert bound_to(tcp, socket.SOCK_STREAM, HostPort("localhost", port))
    assert not bound_to(tcp, socket.SOCK_STREAM, HostPort("127.0.0.1", port + 1))
    assert not bound_to(tcp, socket.SOCK_STREAM, HostPort("127.0.0.2", port))
    assert not bound_to(tcp, socket.SOCK_DGRAM, HostPort("127.0.0.1", port))
    idle = socket.socket()
    idle.bind(("127.0.0.1", 0))  # bound, not listening: a listener it is not
    assert not bound_to(idle, socket.SOCK_STREAM, HostPort("127.0.0.1", 0))
    idle.close()
    tcp.close()


def test_a_kept_socket_that_fits_is_taken_back_with_its_backlog():
    first = tcp_listener(None, "t", HostPort("127.0.0.1", 0))
    address = HostPort("127.0.0.1", first.getsockname()[1])
    client = socket.create_connection(address)  # waits in the backlog: nobody accepts yet
    store = FdStore({})
    store._passed["tcp-tasks-0"] = first.detach()
    listeners = Listeners(store)
    sock = listeners.get(spec(address))
    assert sock is not None and sock.getsockname()[1] == address.port
    sock.setblocking(True)
    accepted, _ = sock.accept()  # the connection made before the "restart"
    accepted.close()
    client.close()
    assert store.held == {"tcp-tasks-0": sock.fileno()}
    listeners.close()


def test_a_kept_socket_on_another_address_is_closed_and_bound_anew():
    old = tcp_listener(None, "t", HostPort("127.0.0.1", 0))
    old_port = old.getsockname()[1]
    store = FdStore({})
    store._passed["tcp-tasks-0"] = old.detach()
    sock = claim(store, "tcp-tasks-0", socket.SOCK_STREAM, HostPort("127.0.0.2", 0))
    assert sock is None
    assert store.held == {}
    # The old port is free again: the kept socket was closed.
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", old_port))
    again.listen()
    again.close()


def test_a_changed_address_rebinds_and_unused_ones_close():
    listeners = Listeners(FdStore({}))
    first = listeners.get(spec(HostPort("127.0.0.1", 0)))
    assert first is not None
    assert listeners.get(spec(HostPort("127.0.0.1", 0))) is first  # still fits

    moved = listeners.get(spec(HostPort("127.0.0.2", 0)))
    assert moved is not None and moved is not first and first.fileno() == -1
    listeners.keep_only(set())
    assert moved.fileno() == -1 and listeners.sockets == {}
    assert listeners.store.held == {}


def test_a_port_taken_by_someone_else_leaves_the_child_to_bind():
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    assert Listeners(None).get(spec(HostPort("127.0.0.1", port))) is None
    squatter.close()


def test_a_kept_unix_socket_fits_while_its_file_is_there(tmp_path):
    path = tmp_path / "control.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    unix.listen()
    assert bound_to(unix, socket.SOCK_STREAM, path)
    assert not bound_to(unix, socket.SOCK_STREAM, tmp_path / "other.sock")
    assert not bound_to(unix, socket.SOCK_STREAM, HostPort("127.0.0.1", 0))
    path.unlink()  # nobody could connect to it any more: bound anew
    assert not bound_to(unix, socket.SOCK_STREAM, path)
    unix.close()
