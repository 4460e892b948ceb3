import socket

import pytest

from skns.metrics.recvmmsg import _SHRINK_AFTER, DENSE, MAX_BATCH, SLOTS, BatchReceiver


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


@pytest.mark.parametrize("slots", [SLOTS, *((s,) for s in SLOTS)], ids=str)
def test_short_long_and_truncated_datagrams(pair, slots):
    rx, tx = pair
    receiver = BatchReceiver(rx, batch=8, size=300, slots=slots)
    small = SLOTS[0] - 2
    payloads = [b"a", b"f" * small, b"g" * (small + 1), b"b" * DENSE, b"c" * (DENSE + 1)]
    payloads += [b"d" * 300, b"e" * 400]
    for p in payloads:
        tx.sendto(p, rx.getsockname())
    got = receive_all(receiver, len(payloads))
    assert got[:-1] == [(p, False) for p in payloads[:-1]]
    assert got[-1] == (b"e" * 300, True)


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


def batch_of(receiver, tx, datagrams):
    for d in datagrams:
        tx.send(d)
    n = receiver.recv()
    assert n == len(datagrams)
    got = [receiver.datagram(i) for i in range(n)]
    receiver.reset(n)
    return got


def test_the_slot_grows_at_once_and_shrinks_after_a_run_of_short_batches(pair):
    rx, tx = pair
    tx.connect(rx.getsockname())
    receiver = BatchReceiver(rx, batch=8, size=256)
    short, long = b"s" * (SLOTS[0] - 2), b"l" * (SLOTS[0] - 1)
    assert receiver.slot == SLOTS[0]
    assert batch_of(receiver, tx, [short, long, short]) == [short, long, short]
    assert receiver.slot == SLOTS[1]  # the next batch gets the larger slot
    assert bytes(receiver.dense[: len(receiver.template)]) == receiver.template
    for _ in range(_SHRINK_AFTER - 1):
        assert batch_of(receiver, tx, [short, short]) == [short, short]
        assert receiver.slot == SLOTS[1]
    assert batch_of(receiver, tx, [long]) == [long]  # a long one starts the run again
    for _ in range(_SHRINK_AFTER):
        assert receiver.slot == SLOTS[1]
        assert batch_of(receiver, tx, [short]) == [short]
    assert receiver.slot == SLOTS[0]
    assert bytes(receiver.dense[: len(receiver.template)]) == receiver.template
    assert batch_of(receiver, tx, [short, short]) == [short, short]
