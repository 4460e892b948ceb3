"""A replica over HTTP: answers, bad input, database down."""

from __future__ import annotations

import json
from collections.abc import Callable

import orjson
import pytest

from skns.messenger.local import LocalReplicas
from skns.messenger.message import max_body
from skns.messenger.pgcluster import free_port

from .httpclient import post, request

# Long enough that the 1024 bytes of framing allowance cannot hide a wrong bytes-per-character.
LIMITS = {"sender_max": 8, "text_max": 300}


@pytest.fixture(scope="module")
def sqlite_replica(tmp_path_factory: pytest.TempPathFactory) -> str:
    from skns.messenger.local import local_settings

    settings = local_settings(tmp_path_factory.mktemp("server"), replicas=1, **LIMITS)
    with LocalReplicas(settings) as replicas:
        yield replicas.urls[0]


def test_post_answers_the_history_up_to_the_message(sqlite_replica: str) -> None:
    status, first = post(sqlite_replica, {"sender": "ann", "text": "first"})
    assert status == 200
    (message,) = first["messages"]
    assert set(message) == {"seq", "sender", "text", "created_at", "sender_count"}
    assert (message["sender"], message["text"], message["sender_count"]) == ("ann", "first", 1)
    status, second = post(sqlite_replica, {"sender": "ann", "text": "second", "extra": 1})
    assert status == 200
    assert [m["text"] for m in second["messages"]][-2:] == ["first", "second"]
    assert second["messages"][-1]["seq"] == message["seq"] + 1
    assert second["messages"][-1]["sender_count"] == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"{oops", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b'"text"', "application/json", 400, "JSON object"),
        ({"text": "hi"}, "application/json", 400, "missing field 'sender'"),
        ({"sender": "ann"}, "application/json", 400, "missing field 'text'"),
        ({"sender": 1, "text": "hi"}, "application/json", 400, "must be a string"),
        ({"sender": "ann", "text": {"a": 1}}, "application/json", 400, "must be a string"),
        ({"sender": "", "text": "hi"}, "application/json", 400, "must not be empty"),
        ({"sender": "ann", "text": ""}, "application/json", 400, "must not be empty"),
        ({"sender": "s" * 9, "text": "hi"}, "application/json", 400, "longer than 8"),
        ({"sender": "ann", "text": "t" * 301}, "application/json", 400, "longer than 300"),
        ({"sender": "ann", "text": "hi"}, "text/plain", 400, "content type"),
        ({"sender": "ann", "text": "hi"}, "application/x-www-form-urlencoded", 400, "content type"),
        (b"{" + b" " * 10_000 + b"}", "application/json", 413, "larger than"),
    ],
)
def test_bad_input_gets_a_json_error_and_stores_nothing(
    sqlite_replica: str, body: object, content_type: str, status: int, reason: str
) -> None:
    _, before = post(sqlite_replica, {"sender": "probe", "text": "before"})
    got, error = post(sqlite_replica, body, content_type)
    assert got == status
    assert reason in error["error"]
    _, after = post(sqlite_replica, {"sender": "probe", "text": "after"})
    assert after["messages"][-1]["seq"] == before["messages"][-1]["seq"] + 1


EMOJI = "\U0001f600"  # outside the BMP: 4 bytes in UTF-8, 12 as json.dumps writes it


@pytest.mark.parametrize("spelling", ["utf-8", "json.dumps"])
def test_the_longest_valid_message_is_accepted_however_it_is_spelt(
    sqlite_replica: str, spelling: str
) -> None:
    # A limit of 6 bytes per character once refused json.dumps' spelling of emoji with 413.
    sender, text = EMOJI * LIMITS["sender_max"], EMOJI * LIMITS["text_max"]

    def body(sender: str, text: str) -> bytes:
        message = {"sender": sender, "text": text}
        return orjson.dumps(message) if spelling == "utf-8" else json.dumps(message).encode()

    status, answer = post(sqlite_replica, body(sender, text))
    assert status == 200, answer
    assert answer["messages"][-1]["text"] == text
    status, error = post(sqlite_replica, body(sender, text + EMOJI))  # one character over
    assert status == 400 and "longer than 300" in error["error"]


def test_the_body_limit_is_exact(sqlite_replica: str) -> None:
    limit = max_body(**LIMITS)
    message = json.dumps({"sender": EMOJI * 8, "text": EMOJI * 300}).encode()
    padded = message[:-1] + b" " * (limit - len(message)) + b"}"
    assert len(padded) == limit
    assert post(sqlite_replica, padded)[0] == 200
    status, error = post(sqlite_replica, message[:-1] + b" " * (limit - len(message) + 1) + b"}")
    assert status == 413 and f"larger than {limit} bytes" in error["error"]


def test_missing_content_type_is_refused(sqlite_replica: str) -> None:
    status, _, error = request(
        sqlite_replica + "/messages", body=orjson.dumps({"sender": "a", "text": "b"})
    )
    assert status == 400 and "content type" in error["error"]


def test_healthz(sqlite_replica: str) -> None:
    status, ctype, body = request(sqlite_replica + "/healthz", "GET")
    assert (status, body) == (200, {"status": "ok", "store": "sqlite"})
    assert ctype.startswith("application/json")


def test_unknown_path_and_method(sqlite_replica: str) -> None:
    assert request(sqlite_replica + "/nope", "GET")[0] == 404
    assert request(sqlite_replica + "/messages", "GET")[0] == 405


def test_database_down_gives_503(start_replicas: Callable[..., LocalReplicas]) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=1"
    replicas = start_replicas(dsn=dsn, replicas=1, healthy=False, db_timeout=0.5)
    (url,) = replicas.urls
    status, error = post(url, {"sender": "ann", "text": "hi"})
    assert status == 503
    assert "not stored" in error["error"]
    status, _, health = request(url + "/healthz", "GET")
    assert status == 503 and "unavailable" in health["error"]
    assert post(url, b"nonsense")[0] == 400  # input is still checked first
