"""Taking the id out of a source frame, and each reason a frame has none."""

from __future__ import annotations

import pytest

from skns.relay.message import BAD_ID, MISSING_ID, NOT_JSON, NOT_OBJECT, message_id


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b'{"id": 7, "text": 42}', 7),
        ('{"id": -3}', -3),
        (b'{"text": 1, "id": 0, "extra": [1]}', 0),
        (b"not json", NOT_JSON),
        (b'{"id": 1', NOT_JSON),  # truncated
        (b"\xff\xfe", NOT_JSON),  # not UTF-8
        (b"", NOT_JSON),
        (b"[1, 2]", NOT_OBJECT),
        (b"7", NOT_OBJECT),
        (b'"id"', NOT_OBJECT),
        (b"null", NOT_OBJECT),
        (b'{"text": 1}', MISSING_ID),
        (b'{"id": true}', BAD_ID),
        (b'{"id": false}', BAD_ID),
        (b'{"id": 1.0}', BAD_ID),
        (b'{"id": "1"}', BAD_ID),
        (b'{"id": null}', BAD_ID),
        (b'{"id": [1]}', BAD_ID),
    ],
)
def test_message_id(frame: bytes | str, expected: int | str) -> None:
    assert message_id(frame) == expected
