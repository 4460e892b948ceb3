import pytest

from skns.metrics.parse import check


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not_json"),
        (b"garbage", "not_json"),
        (b'{"A1": 1, "A2": 2, "A3": 3', "not_json"),
        (b'{"A1": NaN, "A2": 2, "A3": 3}', "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b"42", "not_object"),
        (b'"A1"', "not_object"),
        (b'{"A1": 1, "A2": 2}', "missing_key"),
        (b'{"a1": 1, "A2": 2, "A3": 3}', "missing_key"),
        (b'{"A1": true, "A2": 2, "A3": 3}', "not_integer"),
        (b'{"A1": 1.0, "A2": 2, "A3": 3}', "not_integer"),
        (b'{"A1": "1", "A2": 2, "A3": 3}', "not_integer"),
        (b'{"A1": null, "A2": 2, "A3": 3}', "not_integer"),
        (b'{"A1": 1, "A2": 9223372036854775808, "A3": 3}', "out_of_range"),
        (b'{"A1": 1, "A2": 2, "A3": -9223372036854775809}', "out_of_range"),
        (b'{"A1": 99999999999999999999999, "A2": 2, "A3": 3}', "out_of_range"),
        (b'{"A1": 1e400, "A2": 2, "A3": 3}', "not_integer"),  # beyond a double: not made inf
        (b'{"A1": -0.0, "A2": 2, "A3": 3}', "not_integer"),
        (b"[" * 100_000 + b"]" * 100_000, "not_json"),
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "not_json"),
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": "\xc0\xaf"}', "not_json"),  # overlong UTF-8
        (b'{"A1": 1, "A2": 2, "A3": 3}{"A1": 1, "A2": 2, "A3": 3}', "not_json"),
        # A lone surrogate escape, as orjson (the fast path) and every other surface refuse it:
        # in a key that is otherwise ignored, in a key, low or high, nested.
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": "\\ud800"}', "not_json"),
        (b'{"A1": 1, "A2": 2, "A3": 3, "\\udfff": 0}', "not_json"),
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": [{"y": "a\\udc00b"}]}', "not_json"),
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": "\\ud800\\u0041"}', "not_json"),
    ],
)
def test_rejections_name_their_reason(data, reason):
    assert check(data) == reason


GOOD = '{"A1": 1, "A2": 2, "A3": 3}'


@pytest.mark.parametrize(
    "data",
    [
        GOOD.encode("utf-16"),
        GOOD.encode("utf-16-le"),
        GOOD.encode("utf-16-be"),
        GOOD.encode("utf-32"),
        GOOD.encode("utf-32-le"),
        GOOD.encode("utf-32-be"),
        b"\xef\xbb\xbf" + GOOD.encode(),  # a UTF-8 byte order mark: orjson refuses it too
        # CESU-8: U+1F600 as two UTF-8-encoded surrogates, in a key that is otherwise ignored
        GOOD[:-1].encode() + b', "x": "\xed\xa0\xbd\xed\xb8\x80"}',
        GOOD[:-1].encode() + b', "x": "\xff"}',
    ],
    ids=[
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
        "bom",
        "cesu-8",
        "latin",
    ],
)
def test_what_is_not_utf8_is_not_json(data):
    assert check(data) == "not_json"


def test_accepts_int64_bounds_and_ignores_other_keys():
    data = b'{"A1": -9223372036854775808, "A2": 9223372036854775807, "A3": 0, "x": [1]}'
    assert check(data) == (-(2**63), 2**63 - 1, 0)


@pytest.mark.parametrize(
    ("data", "values"),
    [
        (b'{"A1": -0, "A2": 2, "A3": 3}', (0, 2, 3)),
        (b'{"A1": 7, "A1": 1, "A2": 2, "A3": 3}', (1, 2, 3)),  # a repeated key: the last one
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": 1e400}', (1, 2, 3)),  # what is ignored is ignored
        (b'{"A1": 1, "A2": 2, "A3": 3, "x": "\\ud83d\\ude00"}', (1, 2, 3)),  # a pair: U+1F600
    ],
    ids=["minus zero", "repeated key", "huge float ignored", "surrogate pair"],
)
def test_edge_cases_that_are_accepted(data, values):
    assert check(data) == values
