"""The NATS protocol parser and builders of the lean connection: pure, no server."""

from __future__ import annotations

from typing import Any

import pytest

from skns.cluster import wire
from skns.errors import ProtocolError


class Recorder:
    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []

    def on_msg(self, sid: int, subject: str, reply: str, status: str, payload: bytes) -> None:
        self.ops.append(("msg", sid, subject, reply, status, payload))

    def on_info(self, info: dict[str, Any]) -> None:
        self.ops.append(("info", info))

    def on_ping(self) -> None:
        self.ops.append(("ping",))

    def on_pong(self) -> None:
        self.ops.append(("pong",))

    def on_error(self, text: str) -> None:
        self.ops.append(("err", text))


# A server's stream with every operation the parser reads; payloads hold CRLFs and
# operation names, so only the byte counts can find their ends.
ACK = b'{"stream":"S","seq":41}'
DELIVERY = b'["acct",null,{"x":"MSG a 1 5\\r\\n"}]\r\nPING\r\n'
NO_RESPONDERS = b"NATS/1.0 503\r\n\r\n"
EXPIRED = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n"
STORED = b"NATS/1.0\r\nNats-Msg-Id: e1\r\n\r\n"
REPLY = "$JS.ACK.S.c.1.41.7.1764570000000000000.0"
STREAM = (
    b'INFO {"server_id":"x","max_payload":1048576,"connect_urls":["127.0.0.1:4223"]}\r\n'
    b"+OK\r\n"
    b"PING\r\n"
    b"MSG _INBOX.a.7 3 %d\r\n%s\r\n"
    % (len(ACK), ACK)
    + b"HMSG _INBOX.a.8 3 %d %d\r\n%s\r\n" % (len(NO_RESPONDERS), len(NO_RESPONDERS), NO_RESPONDERS)
    + b"msg in.box 12 %s %d\r\n%s\r\n" % (REPLY.encode(), len(DELIVERY), DELIVERY)
    + b"HMSG in.box 12 %s %d %d\r\n%s%s\r\n"
    % (REPLY.encode(), len(STORED), len(STORED) + len(DELIVERY), STORED, DELIVERY)
    + b"HMSG in.box 12 %d %d\r\n%s\r\n" % (len(EXPIRED), len(EXPIRED), EXPIRED)
    + b"MSG empty 1 0\r\n\r\n"
    + b"PONG\r\n"
    + b"-ERR 'Stale Connection'\r\n"
)
EXPECTED = [
    ("info", {"server_id": "x", "max_payload": 1048576, "connect_urls": ["127.0.0.1:4223"]}),
    ("ping",),
    ("msg", 3, "_INBOX.a.7", "", "", ACK),
    ("msg", 3, "_INBOX.a.8", "", "503", b""),
    ("msg", 12, "in.box", REPLY, "", DELIVERY),
    ("msg", 12, "in.box", REPLY, "", DELIVERY),
    ("msg", 12, "in.box", "", "408", b""),
    ("msg", 1, "empty", "", "", b""),
    ("pong",),
    ("err", "Stale Connection"),
]


def parse(*pieces: bytes) -> list[tuple[Any, ...]]:
    sink = Recorder()
    parser = wire.Parser(sink)
    for piece in pieces:
        parser.feed(piece)
    return sink.ops


def test_a_whole_stream_in_one_read_gives_every_operation_in_order() -> None:
    assert parse(STREAM) == EXPECTED


def test_the_stream_split_in_two_at_every_byte_gives_the_same() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse(STREAM[:cut], STREAM[cut:]) == EXPECTED, f"split at {cut}"


def test_the_stream_a_byte_at_a_time_gives_the_same() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_the_stream_in_three_pieces_gives_the_same() -> None:
    step = 7
    for a in range(0, len(STREAM), step):
        for b in range(a, len(STREAM), step):
            assert parse(STREAM[:a], STREAM[a:b], STREAM[b:]) == EXPECTED


def test_nothing_is_given_before_a_message_is_whole() -> None:
    whole = b"MSG s 1 5\r\nhello\r\n"
    assert parse(whole[:-1]) == []
    assert parse(whole) == [("msg", 1, "s", "", "", b"hello")]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"NATS/1.0\r\n\r\n", ""),
        (b"NATS/1.0 503\r\n\r\n", "503"),
        (b"NATS/1.0 408 Request Timeout\r\n\r\n", "408"),
        (b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 3\r\n\r\n", "100"),
        (b"NATS/1.0\r\nA: 1\r\n\r\n", ""),
    ],
)
def test_the_status_of_a_header_block(headers: bytes, status: str) -> None:
    assert wire.status_of(headers) == status


@pytest.mark.parametrize(
    "stream",
    [
        b"BOGUS\r\n",
        b"MSG s 1\r\n",  # no byte count
        b"MSG s 1 r x 5\r\n",  # one token too many
        b"MSG s x 5\r\nhello\r\n",  # sid not a number
        b"MSG s 1 -1\r\n",
        b"MSG s 1 5\r\nhelloXX",  # not followed by CRLF
        b"HMSG s 1 10 5\r\n",  # headers longer than the whole
        b"HMSG s 1 5\r\n",  # one count only
        b"HMSG s 1 6 6\r\nHTTP/1\r\n",  # not a NATS header block
        b"HMSG s 1 16 16\r\nNATS/1.0 5x3\r\n\r\n\r\n",  # status not 3 digits
        b"INFO {not json}\r\n",
        b"INFO [1]\r\n",
        b"X" * (wire.MAX_CONTROL + 1),  # a control line with no end
    ],
)
def test_what_breaks_the_protocol_raises(stream: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(stream)


def test_a_publish_with_a_message_id_is_counted_headers_and_all() -> None:
    headers = wire.msg_id_headers("e1")
    assert headers == b"NATS/1.0\r\nNats-Msg-Id: e1\r\n\r\n"
    frame = wire.hpub("p.3", "_INBOX.x.1", headers, b"data")
    assert frame == b"HPUB p.3 _INBOX.x.1 %d %d\r\n%sdata\r\n" % (
        len(headers),
        len(headers) + 4,
        headers,
    )
    assert wire.pub("s", "r", b"ab") == b"PUB s r 2\r\nab\r\n"
    assert wire.sub("s.*", 4) == b"SUB s.* 4\r\n"
    assert wire.unsub(4) == b"UNSUB 4\r\n"
    assert wire.connect({"headers": True}) == b'CONNECT {"headers":true}\r\n'
