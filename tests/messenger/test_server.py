"""A replica over HTTP: answers, bad input, database down."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
import time
import urllib.parse
from collections.abc import Callable

import orjson
import pytest

from skns.messenger.local import LocalReplicas
from skns.messenger.message import max_body
from skns.ports import free_port

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


def test_unknown_path_and_method_get_json_errors(sqlite_replica: str) -> None:
    for method, path, status in [
        ("GET", "/nope", 404),
        ("POST", "/messages/", 404),
        ("GET", "/messages", 405),
        ("DELETE", "/messages", 405),
        ("POST", "/healthz", 405),
    ]:
        got, ctype, body = request(sqlite_replica + path, method)
        assert (got, ctype.split(";")[0]) == (status, "application/json"), (method, path)
        assert isinstance(body["error"], str) and body["error"], (method, path)


def test_expect_100_continue_is_honoured_and_others_get_a_json_417(sqlite_replica: str) -> None:
    port = int(sqlite_replica.rpartition(":")[2])
    body = b'{"sender": "ann", "text": "expecting"}'
    head = (
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\nExpect: %s\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head % (len(body), b"100-continue"))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert b"200 OK" in sock.recv(100)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head % (len(body), b"200-ok") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 417 Expectation Failed"
    assert b"Content-Type: application/json" in headers
    assert orjson.loads(payload) == {"error": "unknown Expect: 200-ok"}
    # A body larger than any message is refused before it is sent, not after 100 Continue.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head % (100_000_000, b"100-continue"))
        answer = b""
        while not answer.endswith(b"}"):  # the whole answer, without sending the body
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"larger than" in answer.partition(b"\r\n\r\n")[2]


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


# -- slow and malformed clients ----------------------------------------------------------


def test_slow_clients_are_closed_within_the_request_timeout(
    start_replicas: Callable[..., LocalReplicas],
) -> None:
    (url,) = start_replicas(replicas=1, request_timeout=1.0).urls
    address = urllib.parse.urlsplit(url)
    started = time.monotonic()
    slow = []
    for i in range(100):  # a slowloris: heads that never end, a byte now and then
        sock = socket.create_connection((address.hostname, address.port), timeout=5)
        sock.sendall(b"POST /messages HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
        slow.append(sock)
    silent = slow[::2]  # connected, sent nothing at all
    open_ones = set(range(len(slow)))
    got = [b""] * len(slow)
    while open_ones and time.monotonic() - started < 8:
        for i in list(open_ones):
            try:
                # More now and then (not once answered: the answer would be reset); one in
                # four of the heads never gets a byte more.
                if i % 4 == 1 and not got[i]:
                    slow[i].sendall(b"X")
                slow[i].setblocking(False)
                chunk = slow[i].recv(4096)
                got[i] += chunk
                if chunk == b"":
                    open_ones.discard(i)
            except BlockingIOError:
                pass
            except OSError:  # reset: closed too
                open_ones.discard(i)
        time.sleep(0.2)
    took = time.monotonic() - started
    for sock in slow:
        sock.close()
    assert not open_ones, f"{len(open_ones)} slow connections still open after {took:.1f} s"
    assert silent and took < 5  # request_timeout 1 s, plus a loaded machine's margin
    # A head begun and not ended is told why it is closed (it was closed without a word);
    # a connection that sent nothing is owed nothing.
    assert all(answer == b"" for answer in got[::2])
    for answer in got[1::2]:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head, answer
        assert b"Content-Type: application/json" in head, answer
        assert orjson.loads(body) == {"error": "request head not received within 1 s"}
    # Answered, then idle (its body came after its head; a body refused with 413 while it was
    # still coming): closed with nothing more said.
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        chunk = b"{" + b" " * 65534 + b"}"
        sock.sendall(
            b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 4
        )
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and answer.count(b"HTTP/1.1") == 1, answer
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        body = b'{"sender": "ann", "text": "then idle"}'
        sock.sendall(
            b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        time.sleep(0.2)
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1, answer
    # A body that trickles gets 408 and the connection closes; the replica still serves.
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"sender"'
        )
        started = time.monotonic()
        answer = b""
        while b"}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in answer
    assert b"Connection: close" in answer and took < 5
    assert post(url, {"sender": "ann", "text": "still here"})[0] == 200


def test_a_client_that_never_reads_its_answers_is_closed_and_nothing_is_lost(
    start_replicas: Callable[..., LocalReplicas],
) -> None:
    """Requests pipelined by a client that reads nothing fill the socket; the replica waited
    for it to drain, with no timeout: the connection was held for good."""
    replicas = start_replicas(replicas=1, request_timeout=1.0)
    (url,) = replicas.urls
    address = urllib.parse.urlsplit(url)
    body = orjson.dumps({"sender": "mute", "text": "t" * 4000})  # ~40 KB answers
    one = (
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    sock.connect((address.hostname, address.port))
    sock.setblocking(False)
    started, data, sent, closed = time.monotonic(), one * 2000, 0, None
    try:
        while closed is None and time.monotonic() - started < 20:
            try:
                sent += sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.05)
            except OSError as exc:  # reset: the replica aborted it
                closed = exc
            with contextlib.suppress(BlockingIOError):
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    closed = "closed"
            if sent == len(data):
                time.sleep(0.05)
    finally:
        sock.close()
    assert closed is not None, (
        f"still open after {time.monotonic() - started:.0f} s, {sent} bytes sent",
        replicas.stats(),
    )
    stats = wait_for_stats(replicas, lambda s: s.get("unread_closed") == 1)
    # Every message answered into the full socket was stored: the history shows them all.
    status, answer = post(url, {"sender": "after", "text": "still serving"})
    assert status == 200
    assert answer["messages"][-1]["seq"] == stats["ok"] + 1


def wait_for_stats(replicas: LocalReplicas, until: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + 10
    while not until(stats := orjson.loads(replicas.stats()[0] or b"{}")):
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    return stats


def test_connections_past_the_limit_get_503_and_are_closed(
    start_replicas: Callable[..., LocalReplicas], capfd: pytest.CaptureFixture[str]
) -> None:
    replicas = start_replicas(replicas=1, max_connections=20)
    (url,) = replicas.urls
    address = urllib.parse.urlsplit(url)
    held = [socket.create_connection((address.hostname, address.port)) for _ in range(20)]
    try:
        for _ in range(10):
            with socket.create_connection((address.hostname, address.port), timeout=10) as extra:
                answer = b""
                while chunk := extra.recv(4096):  # the server closes it
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        time.sleep(0.5)
        # A refusal is not an error of ours: no traceback (each one logged a task's
        # AssertionError, 'Task exception was never retrieved', before).
        err = capfd.readouterr().err
        assert "Traceback" not in err, err[-2000:]
        for sock in held[:5]:
            sock.close()
        deadline = time.monotonic() + 10  # room again once the replica saw them close
        while True:
            try:  # still refused: the 503 and close may come while the request is sent
                if post(url, {"sender": "ann", "text": "room again"})[0] == 200:
                    break
            except ConnectionError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while orjson.loads(replicas.stats()[0] or b"{}").get("refused_connections", 0) < 1:
        assert time.monotonic() < deadline, replicas.stats()
        time.sleep(0.1)


def test_malformed_requests_are_logged_once_per_reason(
    start_replicas: Callable[..., LocalReplicas], capfd: pytest.CaptureFixture[str]
) -> None:
    (url,) = start_replicas(replicas=1).urls
    address = urllib.parse.urlsplit(url)
    junk = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the HTTP port
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
    ]
    for i in range(1000):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(junk[i % len(junk)])
            with contextlib.suppress(OSError):
                sock.recv(4096)
    assert post(url, {"sender": "ann", "text": "after the junk"})[0] == 200
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) <= 2 * len(junk), "\n".join(lines[:20])


def test_a_body_that_cannot_be_decoded_gets_400_not_500(
    start_replicas: Callable[..., LocalReplicas], capfd: pytest.CaptureFixture[str]
) -> None:
    """A body whose Content-Encoding or chunks are broken is the client's error: 400 with a
    JSON body (it was a 500 and a traceback), nothing stored, the replica serves on."""
    replicas = start_replicas(replicas=1, request_timeout=1.0)  # the cut one idles out
    (url,) = replicas.urls
    address = urllib.parse.urlsplit(url)
    head = b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    message = b'{"sender": "ann", "text": "hi"}'
    bodies = {
        "corrupt gzip": b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nabcde",
        "corrupt deflate": b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\nzz",
        "gzip cut short": b"Content-Encoding: gzip\r\nContent-Length: 12\r\n\r\n"
        + gzip.compress(message)[:12],
        "bad chunk size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + message + b"\r\n0\r\n\r\n",
    }
    for name, rest in bodies.items():
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(head + rest)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 400 ") or status.startswith(b"HTTP/1.0 400 "), (
            name,
            answer,
        )
        assert isinstance(orjson.loads(body)["error"], str), (name, answer)
    # A well-formed compressed body is read as any other.
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    status, _, answer = request(url + "/messages", body=gzip.compress(message), headers=headers)
    assert status == 200 and answer["messages"][-1]["text"] == "hi"
    assert answer["messages"][-1]["seq"] == 1  # none of the broken ones was stored
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_gone_before_its_body_is_counted_not_logged_as_our_error(
    start_replicas: Callable[..., LocalReplicas], capfd: pytest.CaptureFixture[str]
) -> None:
    """A reset or a hang-up in the middle of the body is the client's doing: no
    traceback per connection (an ERROR with 20 lines each, before), nothing stored."""
    replicas = start_replicas(replicas=1)
    (url,) = replicas.urls
    address = urllib.parse.urlsplit(url)
    head = (
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"sender": "ann", '
    )
    for i in range(20):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(head)
            time.sleep(0.05)  # the handler is reading the body
            if i % 2:  # a reset; else a plain close
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    status, answer = post(url, {"sender": "bob", "text": "after"})
    assert status == 200 and [m["sender"] for m in answer["messages"]] == ["bob"]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error handling request" not in err, err[-2000:]
    deadline = time.monotonic() + 10  # stats are published every 0.5 s
    while orjson.loads(replicas.stats()[0] or b"{}").get("client_gone", 0) < 20:
        assert time.monotonic() < deadline, replicas.stats()
        time.sleep(0.05)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /messages HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
)
def test_a_request_aiohttp_cannot_parse_gets_400_with_a_json_body(
    start_replicas: Callable[..., LocalReplicas], raw: bytes
) -> None:
    (url,) = start_replicas(replicas=1).urls
    address = urllib.parse.urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after the error
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400", head
    assert b"content-type: application/json" in head.lower()
    error = orjson.loads(body)["error"]
    assert isinstance(error, str) and error and "\n" not in error
    assert post(url, {"sender": "ann", "text": "still serving"})[0] == 200
