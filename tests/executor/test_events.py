import orjson
import pytest

from skns.executor.events import BadEvent, Event, parse_frame


def test_single_event() -> None:
    events, batch = parse_frame(b'{"account_id": 7, "payload": {"x": 1}, "event_id": "e1"}', 10)
    assert events == [(7, "e1", {"x": 1})]
    assert batch is False


def test_string_account_text_frame_and_defaults() -> None:
    events, batch = parse_frame('{"account_id": "acme"}', 10)
    assert events == [("acme", None, None)]
    assert not batch


def test_batch() -> None:
    frame = orjson.dumps([{"account_id": i, "payload": i} for i in range(5)])
    events, batch = parse_frame(frame, 10)
    assert batch is True
    assert [e[0] for e in events] == list(range(5))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"account_id": 1', "not JSON"),
        (b'{"payload": 1}', "missing account_id"),
        (b'{"account_id": true}', "account_id must be an integer or a string"),
        (b'{"account_id": 1.5}', "account_id must be an integer or a string"),
        (b'{"account_id": 1e3}', "account_id must be an integer or a string"),
        (b'{"account_id": {"id": 1}}', "account_id must be an integer or a string"),
        (b'{"account_id": [1]}', "account_id must be an integer or a string"),
        (b'{"account_id": null}', "account_id must be an integer or a string"),
        (b'{"account_id": 9223372036854775808}', "account_id out of signed 64-bit range"),
        # Past what orjson holds as an integer: still an integer out of range, not a float.
        (b'{"account_id": 18446744073709551616}', "account_id out of signed 64-bit range"),
        (b'{"account_id": -99999999999999999999}', "account_id out of signed 64-bit range"),
        (b'{"account_id": ""}', "account_id string must have 1..1024 characters"),
        (b"42", "event must be a JSON object"),
        (b"[]", "empty batch"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (
            b'{"account_id": 1, "payload": ' + b"[" * 200 + b"]" * 200 + b"}",
            "nested deeper than 200 levels",
        ),
        (
            b'[{"account_id": 1, "payload": ' + b"[" * 199 + b"]" * 199 + b"}]",
            "nested deeper than 200 levels",
        ),
    ],
)
def test_bad_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(BadEvent) as info:
        parse_frame(frame, 10)
    assert info.value.reason == reason
    assert info.value.answer() == {"error": reason}


def test_big_integers_in_a_payload_stay_exact() -> None:
    frame = b'{"account_id": "big", "payload": {"probe": 1180591620717411303425, "n": [-1e400]}}'
    with pytest.raises(BadEvent, match="not JSON"):
        parse_frame(frame, 10)  # a float beyond a double is refused, not made infinite
    frame = b'[{"account_id": "big", "payload": {"probe": 1180591620717411303425}}]'
    events, _ = parse_frame(frame, 10)
    assert events == [("big", None, {"probe": 1180591620717411303425})]
    assert type(events[0][2]["probe"]) is int


def test_bad_event_in_batch_names_its_index() -> None:
    frame = orjson.dumps([{"account_id": 1}, {"account_id": 2}, {"account_id": False}])
    with pytest.raises(BadEvent) as info:
        parse_frame(frame, 10)
    assert info.value.answer() == {
        "error": "account_id must be an integer or a string",
        "index": 2,
    }


def test_batch_limit() -> None:
    with pytest.raises(BadEvent, match="exceeds 3"):
        parse_frame(orjson.dumps([{"account_id": 1}] * 4), 3)


def test_event_wire_form() -> None:
    event = Event(5, "a", "id", [1, 2])
    assert event.wire() == [5, "a", "id", [1, 2]]
    assert event.attempt == 1


def test_nesting_up_to_the_limit_is_taken_and_many_shallow_events_too() -> None:
    deepest = b'{"account_id": 1, "payload": ' + b"[" * 199 + b"]" * 199 + b"}"
    assert parse_frame(deepest, 10)[0][0][0] == 1
    wide = orjson.dumps([{"account_id": i, "payload": {"n": [i]}} for i in range(1000)])
    assert len(parse_frame(wide, 1000)[0]) == 1000  # 3000 brackets, 3 levels deep
