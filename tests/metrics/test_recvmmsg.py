import socket

import pytest

from skns.metrics.recvmmsg import DENSE, MAX_BATCH, BatchReceiver


@pytest.fixture
def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield rx, tx
    rx.close()
    tx.close()


def receive_all(receiver, expected):
    got = []
    while len(got) < expected:
        n = receiver.recv()
        got += [(receiver.datagram(i), receiver.truncated(i)) for i in range(n)]
        receiver.reset(n)
    return got


def test_short_long_and_truncated_datagrams(pair):
    rx, tx = pair
    receiver = BatchReceiver(rx, batch=8, size=300)
    payloads = [b"a", b"b" * DENSE, b"c" * (DENSE + 1), b"d" * 300, b"e" * 400]
    for p in payloads:
        tx.sendto(p, rx.getsockname())
    got = receive_all(receiver, len(payloads))
    assert got[:4] == [(p, False) for p in payloads[:4]]
    assert got[4] == (b"e" * 300, True)


def test_padding_is_restored_between_batches(pair):
    rx, tx = pair
    receiver = BatchReceiver(rx, batch=4, size=256)
    tx.sendto(b"x" * 100, rx.getsockname())
    receive_all(receiver, 1)
    assert bytes(receiver.dense) == receiver.template
    tx.sendto(b"yy", rx.getsockname())
    assert receive_all(receiver, 1) == [(b"yy", False)]


def test_empty_socket_returns_zero_without_blocking(pair):
    rx, _ = pair
    assert BatchReceiver(rx, batch=4, size=256).recv() == 0


def test_batch_is_bounded(pair):
    rx, tx = pair
    receiver = BatchReceiver(rx, batch=4, size=256)
    for i in range(10):
        tx.sendto(b"%d" % i, rx.getsockname())
    counts = []
    while sum(counts) < 10:
        counts.append(receiver.recv())
        receiver.reset(counts[-1])
    assert max(counts) == 4


def test_batch_beyond_the_maximum_is_refused(pair):
    rx, _ = pair
    with pytest.raises(ValueError, match="batch"):
        BatchReceiver(rx, batch=MAX_BATCH + 1, size=256)
    assert BatchReceiver(rx, batch=MAX_BATCH, size=256).batch == MAX_BATCH
