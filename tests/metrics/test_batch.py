"""The one-call batch parse: exact when it answers, and it declines what it cannot prove."""

import array

import pytest

from skns.metrics.batch import aggregate
from skns.metrics.parse import check
from skns.metrics.recvmmsg import SLOT


def layout(datagrams: list[bytes]):
    """What the receiver leaves behind after receiving these datagrams."""
    n = len(datagrams)
    dense = bytearray(b"[" + (b"\n" * (SLOT - 1) + b",") * n)
    for i, d in enumerate(datagrams):
        part = d[: SLOT - 2]
        dense[1 + i * SLOT : 1 + i * SLOT + len(part)] = part
    lengths = memoryview(array.array("I", [len(d) for d in datagrams]))
    flags = memoryview(array.array("I", [0] * n))
    return dense, memoryview(dense), n, lengths, flags


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


def test_good_batch_in_one_call():
    assert aggregate(*layout(GOOD)) == reference(GOOD) == (3, 3, 9, -5)


def test_int64_bounds_pass():
    batch = [b'{"A1": -9223372036854775808, "A2": 9223372036854775807, "A3": 0}']
    assert aggregate(*layout(batch)) == (1, -(2**63), 2**63 - 1, 0)


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage",
        b"",
        b"[1, 2]",
        b'{"A1": 1, "A2": 2}',
        b'{"A1": true, "A2": 2, "A3": 3}',
        b'{"A1": 1.0, "A2": 2, "A3": 3}',
        b'{"A1": 99999999999999999999, "A2": 2, "A3": 3}',
        b'{"A1": 9223372036854775808, "A2": 2, "A3": 3}',
        b'{"A1": 1, "A2": 2, "A3": 3, "s": "}"}',  # good, but a brace in a string: declined
        b'{"A1": 1, "A2": 2, "A3": 3, "n": {"x": 1}}',  # good, but nested: declined
        b'{"A1": 1, "A2": 2, "A3": 3},5',
        b'{"A1": 1, "A2": 2, "A3": 3}]',
        b'{"A1": 1, "A2": 2, "A3": 3, "pad": "' + b"x" * 200 + b'"}',  # longer than a slot
    ],
)
def test_declines_any_batch_it_cannot_prove(bad):
    assert aggregate(*layout([GOOD[0], bad, GOOD[2]])) is None


def test_broken_halves_cannot_merge_while_another_splits():
    # Alone, each of these is rejected; joined they would read as 3 good objects.
    halves = [
        b'{"A1": 1, "A2": 1',
        b'"A3": 1}',
        b'{"A1": 1, "A2": 1, "A3": 1},{"A1": 1, "A2": 1, "A3": 1}',
    ]
    assert all(isinstance(check(d), str) for d in halves)
    assert aggregate(*layout(halves)) is None
    strings = [b'{"A1": 1, "A2": 1, "A3": 1, "x": "', b'"}', halves[2]]
    assert aggregate(*layout(strings)) is None


def test_truncation_flag_declines():
    dense, view, n, lengths, _ = layout(GOOD)
    flags = memoryview(array.array("I", [0, 0x20, 0]))
    assert aggregate(dense, view, n, lengths, flags) is None


def test_the_region_is_left_as_it_was():
    dense, view, n, lengths, flags = layout(GOOD)
    before = bytes(dense)
    aggregate(dense, view, n, lengths, flags)
    assert bytes(dense) == before


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

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
    b"]",
    b" ",
]
datagram = st.one_of(
    st.sampled_from(GOOD),
    st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join),
    st.binary(max_size=40),
)


@given(st.lists(datagram, min_size=1, max_size=12))
@settings(max_examples=400, deadline=None)
def test_fast_path_never_disagrees_with_the_datagram_by_datagram_check(datagrams):
    got = aggregate(*layout(datagrams))
    if got is not None:
        assert got == reference(datagrams)
        assert all(not isinstance(check(d), str) for d in datagrams)
