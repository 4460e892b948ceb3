"""The metrics bench's generator: what it counts as sent must be what arrives, datagram
by datagram, with and without segmentation offload."""

import json
import socket

import pytest

from skns.metrics.bench import (
    BATCH,
    Sender,
    generate,
    padded,
    payloads,
    receive_only,
    run_receiver,
    share,
)


@pytest.fixture
def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield rx, tx
    rx.close()
    tx.close()


def drain(rx: socket.socket) -> list[bytes]:
    got = []
    rx.setblocking(False)
    try:
        while True:
            got.append(rx.recv(65535))
    except BlockingIOError:
        return got
    finally:
        rx.settimeout(5)


def test_padded_datagrams_are_the_same_json_at_one_length():
    data = payloads(50)
    out = padded(data)
    assert len({len(d) for d in out}) == 1
    assert [json.loads(d) for d in out] == [json.loads(d) for d in data]


@pytest.mark.parametrize("gso", [1, 8])
def test_sender_counts_datagrams_and_each_arrives_apart(pair, gso):
    """With UDP_SEGMENT a message of 8 datagrams leaves as 8 datagrams: without the
    socket option the receiver would get one long one."""
    rx, tx = pair
    data = payloads(64)
    sender = Sender(tx, data, gso)
    assert sender.send(0, 3) == 3 * gso
    got = [rx.recv(65535) for _ in range(3 * gso)]
    want = (padded(data) if gso > 1 else data)[: 3 * gso]
    assert got == want
    assert drain(rx) == []


class _Result:
    def put(self, value):
        self.value = value


@pytest.mark.parametrize("gso", [1, 4])
def test_generate_sends_what_it_reports(pair, gso):
    rx, _ = pair
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    result = _Result()
    generate(rx.getsockname()[1], 4000, 0.5, 1, result, gso)
    sent, cpu, elapsed = result.value
    assert sent == 2000
    assert cpu >= 0 and 0.4 < elapsed < 5
    assert len(drain(rx)) == sent


def test_generate_takes_enough_payloads_for_its_largest_message_size(pair):
    """64 datagrams per message need 64 x BATCH payloads to send BATCH distinct messages."""
    rx, _ = pair
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    result = _Result()
    generate(rx.getsockname()[1], 64 * BATCH * 4, 0.25, 1, result, 64)
    assert result.value[0] == 64 * BATCH
    assert len(drain(rx)) == 64 * BATCH


@pytest.mark.parametrize("gso", [1, 4])
def test_the_floor_receiver_takes_every_datagram_and_reports_its_cpu(gso):
    sent, (got, user, system) = run_receiver(receive_only, 4000, 0.5, 2, gso)
    assert sent == got == 2000
    assert user >= 0 and system >= 0


def test_share():
    assert share([10, 10]) == 1.0
    assert share([12, 10]) == 1.2
    assert share([5, 0]) == float("inf")
