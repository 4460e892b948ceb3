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
    ],
)
def test_rejections_name_their_reason(data, reason):
    assert check(data) == reason


def test_accepts_int64_bounds_and_ignores_other_keys():
    data = b'{"A1": -9223372036854775808, "A2": 9223372036854775807, "A3": 0, "x": [1]}'
    assert check(data) == (-(2**63), 2**63 - 1, 0)
