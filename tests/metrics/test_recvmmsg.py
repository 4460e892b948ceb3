import socket

import pytest

from skns.metrics.recvmmsg import BatchReceiver


@pytest.fixture
def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield rx, tx
    rx.close()
    tx.close()


def test_takes_a_batch_in_one_call_and_flags_truncation(pair):
    rx, tx = pair
    receiver = BatchReceiver(rx, batch=8, size=64)
    payloads = [b"a" * n for n in (1, 10, 64)] + [b"b" * 100]
    for p in payloads:
        tx.sendto(p, rx.getsockname())
    got = []
    while len(got) < len(payloads):
        n = receiver.recv()
        for i in range(n):
            data = bytes(receiver.view[i * 64 : i * 64 + receiver.length(i)])
            got.append((data, receiver.truncated(i)))
    assert got[:3] == [(p, False) for p in payloads[:3]]
    assert got[3] == (b"b" * 64, True)


def test_empty_socket_returns_zero_without_blocking(pair):
    rx, _ = pair
    assert BatchReceiver(rx, batch=4, size=64).recv() == 0


def test_batch_is_bounded(pair):
    rx, tx = pair
    receiver = BatchReceiver(rx, batch=4, size=64)
    for i in range(10):
        tx.sendto(b"%d" % i, rx.getsockname())
    counts = []
    while sum(counts) < 10:
        counts.append(receiver.recv())
    assert max(counts) == 4
