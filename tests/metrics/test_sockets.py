"""The workers' socket group: one sender spread over every socket, or hashing when refused."""

from __future__ import annotations

import select
import socket

import pytest

from skns.metrics.sockets import bind_all, spread
from skns.settings import HostPort

CHUNK = 200  # sent, then drained, so no receive buffer overflows


def shares(socks: list[socket.socket], total: int) -> list[int]:
    """Send ``total`` datagrams from one sender socket; count what each socket receives."""
    port = socks[0].getsockname()[1]
    got = [0] * len(socks)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for sent in range(CHUNK, total + 1, CHUNK):
            for _ in range(CHUNK):
                tx.sendto(b'{"A1": 1, "A2": 2, "A3": 3}', ("127.0.0.1", port))
            while sum(got) < sent:
                ready, _, _ = select.select(socks, [], [], 5.0)
                assert ready, f"datagrams went missing: {got}"
                for s in ready:
                    while True:
                        try:
                            s.recv(2048)
                        except BlockingIOError:
                            break
                        got[socks.index(s)] += 1
    return got


@pytest.fixture
def group(request):
    socks = bind_all(HostPort("127.0.0.1", 0), request.param, 1 << 20)
    yield socks
    for s in socks:
        s.close()


@pytest.mark.parametrize("group", [2, 3], indirect=True)
def test_one_sender_is_spread_over_every_socket(group):
    assert spread(group) == "cbpf"
    got = shares(group, 6000)
    assert sum(got) == 6000
    # A fair share is 6000/n; random choice keeps max/min well inside 1.2 at this count
    # (about 6 standard deviations for n = 2).
    assert max(got) / min(got) <= 1.2, got


@pytest.mark.parametrize("group", [2], indirect=True)
def test_without_the_program_one_sender_lands_on_one_socket(group):
    got = shares(group, 1000)
    assert sorted(got) == [0, 1000]


def test_a_refused_program_falls_back_to_hashing():
    # Bound without SO_REUSEPORT: the socket has no group, and the kernel says EINVAL.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        assert spread([s]) == "hash"
