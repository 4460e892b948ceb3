"""skns.ports: free loopback ports, distinct when asked for together."""

from __future__ import annotations

import contextlib
import socket

from skns.ports import free_port, free_ports


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    with contextlib.ExitStack() as stack:
        for port in ports:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", port))  # raises if another socket still holds it


def test_free_port_is_bindable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
