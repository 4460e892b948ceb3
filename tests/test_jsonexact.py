"""skns.jsonexact: integers of any size survive a read and a write; bad JSON is refused."""

from __future__ import annotations

import contextlib
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skns import jsonexact

BIG = [2**63, 2**64, 2**64 - 1, -(2**63) - 1, 1180591620717411303425, -(10**40), 10**400]


@pytest.mark.parametrize("n", BIG)
def test_big_integers_read_exact(n: int) -> None:
    doc = {"payload": {"probe": n}, "text": "x"}
    got = jsonexact.loads(json.dumps(doc).encode())
    assert got == doc
    assert type(got["payload"]["probe"]) is int


def test_floats_stay_floats_and_digit_strings_stay_strings() -> None:
    raw = b'{"f": 5.5, "e": 1e3, "s": "12345678901234567890123"}'
    assert jsonexact.loads(raw) == {"f": 5.5, "e": 1000.0, "s": "12345678901234567890123"}


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"a": Infinity}',
        b"{",
        b"\xff",
        '{"a":1}'.encode("utf-16"),
        b"[" * 2000 + b"]" * 2000,
        b"1e400",
        b"[1e999, 1" + b"0" * 400 + b"]",
        b"[NaN, 1" + b"0" * 400 + b"]",
    ],
)
def test_refuses_what_is_not_strict_utf8_json(raw: bytes) -> None:
    with pytest.raises(jsonexact.JSONDecodeError):
        jsonexact.loads(raw)


def test_deep_nesting_with_a_big_number_is_refused_not_a_crash() -> None:
    raw = b"[" * 1000 + b"123456789012345678901234" + b"]" * 1000
    with contextlib.suppress(jsonexact.JSONDecodeError):  # exact or refused, never a crash
        assert jsonexact.loads(raw) is not None


@pytest.mark.parametrize("n", BIG)
def test_dumps_writes_big_integers_exact(n: int) -> None:
    out = jsonexact.dumps({"sum": n, 3: [n]}, option=orjson.OPT_NON_STR_KEYS)
    assert json.loads(out) == {"sum": n, "3": [n]}
    assert json.loads(jsonexact.dumps({"sum": n}, option=orjson.OPT_INDENT_2)) == {"sum": n}


def test_dumps_matches_orjson_within_64_bits() -> None:
    doc = {"a": 2**63 - 1, "b": "é"}
    assert jsonexact.dumps(doc) == orjson.dumps(doc)


@given(
    st.recursive(
        st.integers() | st.text() | st.booleans() | st.none(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_round_trip_any_integers(doc: object) -> None:
    assert jsonexact.loads(jsonexact.dumps(doc)) == doc
