"""Parsing requests and building frames, without a network."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skns.tasks import protocol
from skns.tasks.protocol import Fetch, Refusal, Submit

SOFT_MAX = 1000
MAX = 400_000


@pytest.fixture(autouse=True)
def default_digit_limit() -> Iterator[None]:
    """The server's process keeps Python's default limit (other tests may lift it)."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(sys.int_info.default_max_str_digits)
    yield
    sys.set_int_max_str_digits(old)


def parse(message: str | bytes) -> protocol.Request:
    return protocol.parse(message, SOFT_MAX, MAX)


def refusal(message: str | bytes) -> dict:
    request = parse(message)
    assert isinstance(request, Refusal), request
    frame = orjson.loads(request.frame)
    assert frame["type"] == "error"
    assert frame["result"] == request.reason
    return frame


def test_submit_goes_to_the_queue_of_its_size() -> None:
    assert parse('{"type":"factorial","number":5}') == Submit(5, "soft")
    assert parse(b'{"number":1000,"type":"factorial"}') == Submit(1000, "soft")
    assert parse('{"type":"factorial","number":1001}') == Submit(1001, "hard")
    assert parse('{"type":"factorial","number":0}') == Submit(0, "soft")
    assert parse(f'{{"type":"factorial","number":{MAX}}}') == Submit(MAX, "hard")


def test_fetch() -> None:
    assert parse('{"task_id":"abc","type":"result"}') == Fetch("abc")


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        ("not json", "not valid JSON"),
        ('{"type":"factorial",', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ('{"type":"factorial","number":NaN}', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('"factorial"', "expected a JSON object"),
        ("42", "expected a JSON object"),
        ("null", "expected a JSON object"),
        ("[" * 5000 + "]" * 5000, "not valid JSON"),  # too deep for orjson and for json
        # Past 64 bits jsonexact reads the stdlib way; nesting must not escape it there.
        ('{"number":1' + "0" * 30 + ',"x":' + "[" * 5000 + "]" * 5000 + "}", "not valid JSON"),
    ],
)
def test_malformed_requests_are_a_json_decode_error(message: str | bytes, detail: str) -> None:
    frame = refusal(message)
    assert frame["result"] == "JSON decode error"
    assert frame["detail"].startswith(detail)


@pytest.mark.parametrize(
    "message",
    ['{"type":"square","number":5}', '{"number":5}', "{}", '{"type":null}', '{"type":["x"]}'],
)
def test_unknown_types_are_an_unknown_task(message: str) -> None:
    frame = refusal(message)
    assert frame["result"] == "Unknown task"
    assert '"factorial"' in frame["detail"]


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("-1", "got -1"),
        ("-99999999999999999999999", "got -99999999999999999999999"),
        ("-" + "9" * 400, "got a negative integer of 400 digits"),
        ("-" + "9" * 5000, "got a negative integer of more than 4300 digits"),
        ("1.5", "got a float"),
        ("5.0", "got a float"),
        ("1e3", "got a float"),
        ("true", "got a boolean"),
        ("false", "got a boolean"),
        ('"5"', "got a string"),
        ("null", "got null"),
        ("[5]", "got a JSON array"),
        ('{"n":5}', "got a JSON object"),
    ],
)
def test_bad_numbers_are_an_invalid_number(number: str, kind: str) -> None:
    frame = refusal(f'{{"type":"factorial","number":{number}}}')
    assert frame["result"] == "Invalid number"
    assert frame["detail"] == f"number must be an integer from 0 to {MAX}, {kind}"


def test_a_float_beyond_a_double_is_refused_not_rounded() -> None:
    # jsonexact's rule at every boundary: exact or refused, never changed.
    frame = refusal('{"type":"factorial","number":7,"note":1e999}')
    assert frame["result"] == "JSON decode error" and "infinity" in frame["detail"]


def test_deep_nesting_behind_a_float_number_is_an_answer_not_a_crash() -> None:
    # The stdlib fallback once ran outside the try: RecursionError, and the connection died.
    message = '{"type":"factorial","number":5.5,"x":' + "[" * 1000 + "]" * 1000 + "}"
    assert len(message) < 2100
    frame = refusal(message)  # valid JSON (orjson reads 1024 levels): a float number
    assert frame["result"] == "Invalid number" and frame["detail"].endswith("got a float")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_json_in_another_encoding_than_utf8_is_refused(encoding: str) -> None:
    message = '{"type":"factorial","number":3}'.encode(encoding)
    assert json.loads(message) == {"type": "factorial", "number": 3}  # the stdlib would guess
    assert refusal(message)["result"] == "JSON decode error"


def test_a_binary_frame_of_utf8_json_is_a_request() -> None:
    assert parse('{"type":"factorial","number":3,"who":"é😀"}'.encode()) == Submit(3, "soft")


def test_a_missing_number_is_an_invalid_number() -> None:
    frame = refusal('{"type":"factorial"}')
    assert frame["result"] == "Invalid number"
    assert frame["detail"].startswith("missing number")


@pytest.mark.parametrize(
    ("number", "got"),
    [
        (str(MAX + 1), str(MAX + 1)),
        (str(2**63), str(2**63)),
        (str(2**64), str(2**64)),  # exact: orjson alone reads 1.8446744073709552e+19
        (str(2**70 + 1), str(2**70 + 1)),
        ("9" * 400, "an integer of 400 digits"),
        ("9" * 5000, "an integer of more than 4300 digits"),
    ],
)
def test_numbers_over_the_maximum_are_refused(number: str, got: str) -> None:
    frame = refusal(f'{{"type":"factorial","number":{number}}}')
    assert frame["result"] == "Number too large"
    assert frame["max_number"] == MAX
    assert frame["detail"] == f"number must be an integer from 0 to {MAX}, got {got}"


def test_a_long_number_is_too_large_whatever_the_digit_limit_was_at_import() -> None:
    """The process's int/str digit limit can change after the module is loaded (a worker or
    a benchmark lifts it): the refusal follows the limit in force, never "not valid JSON"."""
    for limit in (10_000, 640, sys.int_info.default_max_str_digits):
        sys.set_int_max_str_digits(limit)
        frame = refusal('{"type":"factorial","number":' + "9" * (limit + 50) + "}")
        assert frame["result"] == "Number too large", frame
        assert frame["detail"].endswith(f"got an integer of more than {limit} digits")


def test_a_number_past_64_bits_within_the_maximum_goes_to_the_hard_queue() -> None:
    big = 2**64 + 1
    assert protocol.parse(f'{{"type":"factorial","number":{big}}}', SOFT_MAX, 2**65) == Submit(
        big, "hard"
    )


@pytest.mark.parametrize("message", ['{"type":"result"}', '{"type":"result","task_id":5}'])
def test_a_fetch_without_a_string_id_is_an_invalid_task_id(message: str) -> None:
    assert refusal(message)["result"] == "Invalid task id"


def test_frames_splice_digits_of_any_size() -> None:
    digits = b"9" * 10_000  # far beyond 64 bits, and beyond Python's default str limit
    frame = protocol.success_frame(b"id", digits)
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        assert json.loads(frame) == {"type": "success", "task_id": "id", "result": int(digits)}
    finally:
        sys.set_int_max_str_digits(old)


def test_frames_are_json() -> None:
    assert orjson.loads(protocol.ack_frame("t-1")) == {"type": "result", "task_id": "t-1"}
    assert orjson.loads(protocol.pending_frame("t-1", "running")) == {
        "type": "pending",
        "task_id": "t-1",
        "status": "running",
    }
    timeout = orjson.loads(protocol.timeout_frame("t-1", 0.5))
    assert timeout["type"] == "error"
    assert timeout["result"] == "Timeout error"
    assert timeout["task_id"] == "t-1"
    # A client's id is echoed escaped, whatever it holds.
    assert orjson.loads(protocol.not_found_frame('a"b\\'))["task_id"] == 'a"b\\'


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_frame_gets_an_answer(message: bytes | str) -> None:
    assert isinstance(parse(message), Submit | Fetch | Refusal)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=10,
    ),
    st.sampled_from(["factorial", "result", "other"]),
)
def test_any_json_request_gets_an_answer(value: object, kind: str) -> None:
    for request in ({"type": kind, "number": value}, {"type": kind, "task_id": value}):
        text = json.dumps(request)  # NaN and Infinity too: not JSON, refused as such
        assert isinstance(parse(text), Submit | Fetch | Refusal)
