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
        # A lone surrogate escape, also after an integer that sends the read to the stdlib.
        b'["\\ud800"]',
        b"[1" + b"0" * 400 + b', "\\ud800"]',
        b'{"n": 1' + b"0" * 400 + b', "\\udc00": 1}',
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


def _nested(levels: int, kind: str, leaf: object) -> bytes:
    doc = leaf
    for _ in range(levels):
        doc = [doc] if kind == "list" else {"k": doc}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("leaf", [1, 10**30, []], ids=["int", "big int", "empty list"])
def test_max_depth_counts_levels_exactly(kind: str, leaf: object) -> None:
    own = 1 if leaf == [] else 0  # an empty list is a level of its own
    assert jsonexact.loads(_nested(30 - own, kind, leaf), max_depth=30) is not None
    with pytest.raises(jsonexact.TooDeep, match="nested deeper than 30 levels"):
        jsonexact.loads(_nested(31 - own, kind, leaf), max_depth=30)
    # What it lets through can be written back, with WRITE_DEPTH - max_depth levels around it.
    doc = jsonexact.loads(_nested(30 - own, kind, leaf), max_depth=30)
    for _ in range(jsonexact.WRITE_DEPTH - 30):
        doc = [doc]
    assert jsonexact.dumps(doc)


def test_max_depth_leaves_wide_documents_alone() -> None:
    wide = json.dumps([{"a": [i]} for i in range(500)]).encode()  # 1000 brackets, 3 levels
    assert len(jsonexact.loads(wide, max_depth=3)) == 500
