"""The worker's batch fold: the fast path where it can, halves where it cannot, exact always."""

import socket

import pytest

from skns.metrics import worker
from skns.metrics.parse import check
from skns.metrics.partials import REASONS
from skns.metrics.recvmmsg import BatchReceiver
from skns.metrics.worker import _LEAF, _RejectLog, fold


@pytest.fixture
def link():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield BatchReceiver(rx, 1024, 512), tx
    rx.close()
    tx.close()


def folded(link, datagrams):
    receiver, tx = link
    for d in datagrams:
        tx.send(d)
    n = receiver.recv()
    assert n == len(datagrams)
    rejected = [0] * len(REASONS)
    got = fold(receiver, 0, n, rejected, _RejectLog())
    receiver.reset(n)
    return got, dict(zip(REASONS, rejected, strict=True))


def good(i: int) -> bytes:
    return b'{"A1": %d, "A2": %d, "A3": %d}' % (i, i % 7, -(i % 5))


def test_a_rare_bad_datagram_sends_only_its_neighbourhood_one_by_one(link, monkeypatch):
    datagrams = [good(i) for i in range(1000)]
    datagrams[300] = b'{"A1": true, "A2": 1, "A3": 1}'
    datagrams[301] = b'{"A1": 1, "A2": 99999999999999999999, "A3": 1}'
    datagrams[777] = b"\xff\xfe"
    checked = []

    def counting(rx, start, stop, rejected, rejects):
        checked.append(stop - start)
        return one_by_one(rx, start, stop, rejected, rejects)

    one_by_one = worker._one_by_one
    monkeypatch.setattr(worker, "_one_by_one", counting)
    got, rejected = folded(link, datagrams)
    values = [check(d) for d in datagrams]
    kept = [v for v in values if not isinstance(v, str)]
    assert got == (
        len(kept),
        sum(v[0] for v in kept),
        max(v[1] for v in kept),
        min(v[2] for v in kept),
    )
    assert rejected == {
        **dict.fromkeys(REASONS, 0),
        "not_integer": 1,
        "out_of_range": 1,
        "not_json": 1,
    }
    assert 0 < sum(checked) <= 2 * _LEAF  # two neighbourhoods, not the batch of 1000


def test_a_batch_of_garbage_is_counted_exactly(link):
    datagrams = [b"x%d" % i for i in range(200)] + [good(5)]
    got, rejected = folded(link, datagrams)
    assert got[:2] == (1, 5)
    assert rejected["not_json"] == 200
