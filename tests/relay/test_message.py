"""Taking the id out of a source frame, and each reason a frame has none."""

from __future__ import annotations

import pytest

from skns.relay.message import (
    BAD_ID,
    MISSING_ID,
    NOT_JSON,
    NOT_OBJECT,
    REPEATED_ID,
    message_id,
)


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
        # Integers past 64 bits, which orjson reads as floats (or refuses): exact.
        (b'{"id": 18446744073709551615}', 2**64 - 1),
        (b'{"id": 18446744073709551616, "text": 1}', 2**64),
        (b'{"id": -9223372036854775809}', -(2**63) - 1),
        (b'{"id": 1180591620717411303425}', 1180591620717411303425),
        (b'{"id": 1' + b"0" * 400 + b"}", 10**400),  # too large even for a double
        (b'{"id": 1e30}', BAD_ID),  # a float, also when it is large
        (b'{"id": 1.5, "text": 12345678901234567890123}', BAD_ID),
        (b"[123456789012345678901234567890]", NOT_OBJECT),
        (b'{"id": 1' + b"0" * 400, NOT_JSON),  # truncated after a huge integer
        (b'{"id": NaN}', NOT_JSON),
        (b'{"id": 1e400}', NOT_JSON),  # beyond a double: refused, not made infinite
        (b'{"id": -0}', 0),
        (b'{"id": -0.0}', BAD_ID),
        # A repeated id: which one is meant? (The frame goes out verbatim.)
        (b'{"id": 5, "id": 6}', REPEATED_ID),
        (b'{"id": 5, "text": 1, "id": 5}', REPEATED_ID),  # even the same value
        ('{"id": 5, "id": 6}', REPEATED_ID),
        (b'{"id": 5, "\\u0069d": 6}', REPEATED_ID),  # spelled with an escape
        (b'{"\\u0069\\u0064": 5, "id": 6}', REPEATED_ID),
        (b'{"id": 18446744073709551616, "id": 1}', REPEATED_ID),  # past 64 bits
        (b'{"id": 1, "id": 1' + b"0" * 400 + b"}", REPEATED_ID),  # past a double
        (b'{"\\u0069d": 5}', 5),  # spelled with an escape, once
        (b'{"id": 5, "text": "\\"id\\": 6"}', 5),  # inside a string: no key
        (b'{"id": 5, "text": {"id": 6, "id": 7}}', 5),  # nested: not the message's id
        (b'{"id": 5, "text": "id", "idx": 1, "ID": 2}', 5),
        (b'{"id": 5, "text": "\\\\"}', 5),
        (b'{"id": 5, "x": "\\n", "t": ' + b"[" * 1000 + b"]" * 1000 + b"}", NOT_JSON),
        (b'{"id": 1, "text": "\\ud800"}', NOT_JSON),  # a lone surrogate
        (b'{"id": 1' + b"0" * 400 + b', "text": "\\ud800"}', NOT_JSON),  # after a huge id
        (b'{"id": 1, "text": "\xc0\xaf"}', NOT_JSON),  # overlong UTF-8
        (b'\xef\xbb\xbf{"id": 1}', NOT_JSON),  # a byte order mark
        (b"[" * 100_000 + b"]" * 100_000, NOT_JSON),
        (b'{"id": 1, "text": ' + b"[" * 1000 + b"]" * 1000 + b"}", 1),
    ],
)
def test_message_id(frame: bytes | str, expected: int | str) -> None:
    assert message_id(frame) == expected
