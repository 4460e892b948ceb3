"""The one-call batch parse: exact when it answers, and it declines what it cannot prove.

Batches are real: datagrams sent over loopback and taken with the worker's receiver."""

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skns.metrics.batch import aggregate
from skns.metrics.parse import check
from skns.metrics.recvmmsg import SLOTS, BatchReceiver

BATCH = 16


@pytest.fixture(scope="module", params=[SLOTS, *((s,) for s in SLOTS)], ids=str)
def link(request):
    """A receiver (adaptive, or pinned to one slot size) and a sender on loopback."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield BatchReceiver(rx, BATCH, 512, slots=request.param), tx
    rx.close()
    tx.close()


def fast(link, datagrams: list[bytes], start: int = 0, stop: int | None = None):
    """What the fast path says about slots [start, stop) of one batch of these datagrams."""
    receiver, tx = link
    assert len(datagrams) <= BATCH
    for d in datagrams:
        tx.send(d)
    n = receiver.recv()  # loopback queues a datagram before send() returns
    assert n == len(datagrams)
    try:
        return aggregate(receiver, start, n if stop is None else stop)
    finally:
        receiver.reset(n)


def reference(datagrams):
    good = [v for v in map(check, datagrams) if not isinstance(v, str)]
    if not good:
        return None
    return len(good), sum(v[0] for v in good), max(v[1] for v in good), min(v[2] for v in good)


GOOD = [
    b'{"A1": 1, "A2": 5, "A3": -5}',
    b'{"A3":0,"A2":-1,"A1":-7,"host":"x"}',
    b'{ "A1" : 9 , "A2" : 9 , "A3" : 9 }',
]


def test_good_batch_in_one_call(link):
    assert fast(link, GOOD) == reference(GOOD) == (3, 3, 9, -5)


def test_what_needs_no_proof_of_slot_confinement_passes(link):
    batch = [
        b'{"A1": 1, "A2": 2, "A3": 3, "s": "}{"}',
        b'{"A1": 1, "A2": 2, "A3": 3, "n": {"A1": 100, "x": {}}}',
        b'{"A1": 2, "A1": 4, "A2": 2, "A3": 3, "t": "caf\xc3\xa9 \xf0\x9f\x98\x80"}',
        b'{"\\u0041\\u0031": 8, "A2": 2, "A3": 3}',
    ]
    assert fast(link, batch) == reference(batch) == (4, 14, 2, 3)


def test_a_datagram_filling_its_slot_passes(link):
    receiver, _ = link
    whole = b'{"A1": 1, "A2": 2, "A3": 3}' + b" " * (receiver.slot - 2 - 27)
    assert fast(link, [whole]) == (1, 1, 2, 3)


def test_int64_bounds_pass_and_sums_stay_exact(link):
    # Compact, so that they fit the smaller slot (62 bytes) too.
    top = b'{"A1":9223372036854775807,"A2":9223372036854775807,"A3":0}'
    bottom = b'{"A1":-9223372036854775808,"A2":0,"A3":-9223372036854775808}'
    assert fast(link, [top] * 3 + [bottom]) == (4, 2 * (2**63) - 3, 2**63 - 1, -(2**63))
    assert fast(link, [top] * 3)[1] == 3 * (2**63 - 1)  # past 64 bits: a Python int


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage",
        b"",
        b"[1, 2]",
        b"null",
        b'{"A1": 1, "A2": 2}',
        b'{"A1": true, "A2": 2, "A3": 3}',
        b'{"A1": false, "A2": 2, "A3": 3}',
        b'{"A1": 1.0, "A2": 2, "A3": 3}',
        b'{"A1": 1e2, "A2": 2, "A3": 3}',
        b'{"A1": null, "A2": 2, "A3": 3}',
        b'{"A1": "1", "A2": 2, "A3": 3}',
        b'{"A1": 99999999999999999999, "A2": 2, "A3": 3}',
        b'{"A1": 9223372036854775808, "A2": 2, "A3": 3}',
        b'{"A1": 1, "A2": -9223372036854775809, "A3": 3}',
        b'{"A1": 1, "A2": 2, "A3": 3, "n": [1]}',  # good, but an array could span slots: declined
        b'{"A1": 1, "A2": 2, "A3": 3, "s": "["}',  # good, but a "[" anywhere: declined
        b'{"A1": 1, "A2": 2, "A3": 3},5',
        b'{"A1": 1, "A2": 2, "A3": 3},{"A1": 1, "A2": 2, "A3": 3}',
        b'{"A1": 1, "A2": 2, "A3": 3}]',
        b'{"A1": 1, "A2": 2, "A3": 3, "x": NaN}',
        b'{"A1": 1, "A2": 2, "A3": 3, "pad": "' + b"x" * 200 + b'"}',  # longer than a slot
        # 256 and 382 bytes: their low length bytes (0, 126) alone would pass for short
        b'{"A1": 1, "A2": 2, "A3": 3}' + b" " * (256 - 27),
        b'{"A1": 1, "A2": 2, "A3": 3}' + b" " * (382 - 27),
        b'{"A1": 1, "A2": 2, "A3": 3}' + b" " * 600,  # truncated by the receiver
        b'{"A1": 1, "A2": 2, "A3": 3, "x": "\xff"}',  # not UTF-8 in a key msgspec skips
        b'{"A1": 1, "A2": 2, "A3": 3, "x": "\xed\xa0\x80"}',  # a CESU-8 surrogate
        b'{"A1": 1, "A2": 2, "A3": 3}' + " ".encode("utf-16-le"),
    ],
)
def test_declines_any_batch_it_cannot_prove(link, bad):
    assert fast(link, [GOOD[0], bad, GOOD[2]]) is None


def test_broken_halves_cannot_merge_while_another_splits(link):
    # Alone, each of these is rejected; joined they would read as 3 good objects.
    halves = [
        b'{"A1": 1, "A2": 1',
        b'"A3": 1}',
        b'{"A1": 1, "A2": 1, "A3": 1},{"A1": 1, "A2": 1, "A3": 1}',
    ]
    assert all(isinstance(check(d), str) for d in halves)
    assert fast(link, halves) is None
    strings = [b'{"A1": 1, "A2": 1, "A3": 1, "x": "', b'"}', halves[2]]
    assert fast(link, strings) is None
    arrays = [b'{"A1": 1, "A2": 1, "A3": 1, "x": [1', b'{"A1": 1, "A2": 1, "A3": 1}]}', halves[2]]
    assert fast(link, arrays) is None


def test_the_region_is_left_as_it_was(link):
    receiver, tx = link
    for d in GOOD:
        tx.send(d)
    n = receiver.recv()
    before = bytes(receiver.dense)
    aggregate(receiver, 0, n)
    aggregate(receiver, 1, 2)
    assert bytes(receiver.dense) == before
    receiver.reset(n)


def test_a_range_of_slots_is_taken_alone(link):
    batch = [GOOD[0], b"garbage", GOOD[1], GOOD[2]]
    assert fast(link, batch) is None
    assert fast(link, batch, 2, 4) == reference(GOOD[1:]) == (2, 2, 9, 0)
    assert fast(link, batch, 0, 1) == reference(GOOD[:1])
    assert fast(link, batch, 1, 3) is None


PIECES = [
    *GOOD,
    b"{",
    b"}",
    b",",
    b'"',
    b'"A1": 1',
    b'"A2": 2',
    b'"A3": 3',
    b": ",
    b"1",
    b"[",
    b"]",
    b" ",
    b"\n",
    b'"A1": true',
    b'"A2": 1.5',
    b'"A3": 9223372036854775808',
    b'"A1": -9223372036854775809',
    b"\\u0041",
    b"\xc3\xa9",  # UTF-8 for U+00E9
    b"\xed\xa0\x80",  # CESU-8: a UTF-8-encoded surrogate
    b"\xff",
]
datagram = st.one_of(
    st.sampled_from(GOOD),
    st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join),
    st.binary(max_size=40),
)


@given(st.lists(datagram, min_size=1, max_size=12), st.data())
@settings(max_examples=400, deadline=None)
def test_fast_path_never_disagrees_with_the_datagram_by_datagram_check(link, datagrams, data):
    start = data.draw(st.integers(0, len(datagrams) - 1))
    stop = data.draw(st.integers(start + 1, len(datagrams)))
    got = fast(link, datagrams, start, stop)
    if got is not None:
        assert got == reference(datagrams[start:stop])
        assert all(not isinstance(check(d), str) for d in datagrams[start:stop])
