"""Request validation: what a 400 is given for."""

from __future__ import annotations

import json

import orjson
import pytest

from skns.messenger.message import BadMessage, max_body, parse_message


def parse(body: bytes | object) -> tuple[str, str]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_message(raw, sender_max=8, text_max=20)


def test_valid_message() -> None:
    assert parse({"sender": "ann", "text": "hello"}) == ("ann", "hello")


def test_extra_keys_are_ignored_and_unicode_counts_characters() -> None:
    assert parse({"sender": "żółw", "text": "ü" * 20, "x": 1}) == ("żółw", "ü" * 20)


def test_limits_are_inclusive() -> None:
    assert parse({"sender": "s" * 8, "text": "t" * 20}) == ("s" * 8, "t" * 20)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ([1, 2], "JSON object"),
        ("just a string", "JSON object"),
        (None, "JSON object"),
        ({"text": "hi"}, "missing field 'sender'"),
        ({"sender": "ann"}, "missing field 'text'"),
        ({"sender": 5, "text": "hi"}, "'sender' must be a string"),
        ({"sender": "ann", "text": None}, "'text' must be a string"),
        ({"sender": "ann", "text": ["hi"]}, "'text' must be a string"),
        ({"sender": "", "text": "hi"}, "'sender' must not be empty"),
        ({"sender": "ann", "text": ""}, "'text' must not be empty"),
        ({"sender": "s" * 9, "text": "hi"}, "'sender' is longer than 8"),
        ({"sender": "ann", "text": "t" * 21}, "'text' is longer than 20"),
        ({"sender": "a\x00b", "text": "hi"}, "NUL"),
        (b'{"sender": "\\ud800", "text": "hi"}', "not valid JSON"),  # a lone surrogate
        (b'{"sender": "\xc0\xaf", "text": "hi"}', "not valid JSON"),  # overlong UTF-8
        (b'\xef\xbb\xbf{"sender": "ann", "text": "hi"}', "not valid JSON"),  # a BOM
        (b'{"sender": "ann", "text": "hi", "n": 1e400}', "not valid JSON"),
        (b'{"sender": "ann", "text": "hi", "n": NaN}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"sender": "ann", "text": "hi", "sender": 1}', "'sender' must be a string"),
    ],
)
def test_bad_messages(body: object, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        parse(body)


@pytest.mark.parametrize("char", ["a", "\u00fc", "\u20ac", "\U0001f600", "\x7f", "\n"])
def test_the_longest_valid_message_fits_the_body_limit_in_every_spelling(char: str) -> None:
    sender_max, text_max = 8, 20
    message = {"sender": char * sender_max, "text": char * text_max}
    spellings = [
        orjson.dumps(message),  # raw UTF-8
        json.dumps(message).encode(),  # ASCII: a non-BMP character is a 12-byte surrogate pair
        json.dumps(message, indent=8).encode(),  # with whitespace
    ]
    for body in spellings:
        assert len(body) <= max_body(sender_max, text_max), body
        assert parse_message(body, sender_max, text_max) == (message["sender"], message["text"])


def test_a_repeated_key_counts_once_and_big_numbers_aside_are_ignored() -> None:
    body = b'{"sender": 1, "sender": "ann", "text": "hi", "n": 123456789012345678901234567890}'
    assert parse(body) == ("ann", "hi")
