"""The NATS client protocol as bytes: what the lean connection (:mod:`skns.cluster.lean`)
sends, and a parser of what the server sends. Pure: no I/O.

Only what the two hot flows need: ``CONNECT``, ``PING``/``PONG``, ``SUB``/``UNSUB``,
``PUB``/``HPUB`` out; ``INFO``, ``MSG``/``HMSG``, ``PING``/``PONG``, ``+OK``/``-ERR`` in.
Of a message's headers only the status of the first line is read (``NATS/1.0 503``: no
responders; ``408``: a pull request expired; ``100``: a heartbeat): nats-py parses every
header block through the email package, which the hot flows never need.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from ..errors import ProtocolError

CRLF = b"\r\n"
HEADER_LINE = b"NATS/1.0"
PLAIN_HEADERS = HEADER_LINE + CRLF  # a header block whose first line has no status
MAX_CONTROL = 64 * 1024  # longest control line accepted (an INFO with many connect_urls)


class Sink(Protocol):
    """Where the parser sends what it read, one call per operation, in order."""

    def on_msg(self, sid: int, subject: str, reply: str, status: str, payload: bytes) -> None: ...

    def on_info(self, info: dict[str, Any]) -> None: ...

    def on_ping(self) -> None: ...

    def on_pong(self) -> None: ...

    def on_error(self, text: str) -> None: ...


def connect(options: dict[str, Any]) -> bytes:
    return b"CONNECT " + orjson.dumps(options) + CRLF


PING = b"PING" + CRLF
PONG = b"PONG" + CRLF


def sub(subject: str, sid: int) -> bytes:
    return b"SUB %s %d\r\n" % (subject.encode(), sid)


def unsub(sid: int) -> bytes:
    return b"UNSUB %d\r\n" % sid


def pub(subject: str, reply: str, payload: bytes) -> bytes:
    return b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(payload), payload)


def msg_id_headers(msg_id: str) -> bytes:
    """The header block of a publish deduplicated by JetStream on ``msg_id``."""
    return b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()


def hpub(subject: str, reply: str, headers: bytes, payload: bytes) -> bytes:
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        len(headers),
        len(headers) + len(payload),
        headers,
        payload,
    )


def status_of(headers: bytes) -> str:
    """The status code of a header block's first line (``NATS/1.0 503``), or ""."""
    if not headers.startswith(HEADER_LINE):
        raise ProtocolError(f"NATS: a header block starts with {headers[:16]!r}")
    end = headers.find(CRLF)
    line = headers[len(HEADER_LINE) : end if end >= 0 else len(headers)].strip()
    code = line[:3]
    if not code:
        return ""
    if len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"NATS: a header status line {line[:32]!r}")
    return code.decode()


class Parser:
    """Bytes read from a NATS server in, in pieces of any size; operations out to ``sink``.

    Raises :class:`~skns.errors.ProtocolError` on anything it cannot read: the caller
    drops the connection (a parser that lost its place cannot find it again).
    """

    __slots__ = ("_body", "_buf", "sink")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._buf = bytearray()
        # The message whose control line was read, waiting for its bytes:
        # (sid, subject, reply, header bytes or -1 for MSG, total bytes).
        self._body: tuple[int, str, str, int, int] | None = None

    def feed(self, data: bytes) -> None:
        # Parsed from one bytes object (slices of it are the payloads: one copy each); what
        # is left of it waits in _buf for the next read. A message line (the server's
        # "MSG", nearly every operation) is read here, the rest by _control.
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        size = len(data)
        pos = 0
        sink = self.sink
        try:
            while True:
                body = self._body
                if body is not None:
                    sid, subject, reply, hlen, total = body
                    end = pos + total
                    if size < end + 2:
                        return
                    if data[end : end + 2] != CRLF:
                        raise ProtocolError("NATS: a message not followed by CRLF")
                    if hlen < 0:
                        status, payload = "", data[pos:end]
                    else:
                        # Most header blocks (a delivery's stored headers) have no status.
                        plain = data.startswith(PLAIN_HEADERS, pos, pos + hlen)
                        status = "" if plain else status_of(data[pos : pos + hlen])
                        payload = data[pos + hlen : end]
                    pos = end + 2
                    self._body = None
                    sink.on_msg(sid, subject, reply, status, payload)
                    continue
                eol = data.find(CRLF, pos)
                if eol < 0:
                    if size - pos > MAX_CONTROL:
                        raise ProtocolError("NATS: a control line past 64 KiB")
                    return
                line = data[pos:eol]
                pos = eol + 2
                if line.startswith(b"MSG "):
                    self._body = _message_line(False, line[4:])
                elif line.startswith(b"HMSG "):
                    self._body = _message_line(True, line[5:])
                else:
                    self._control(line)
        finally:
            if pos < size:
                buf += data[pos:]

    def _control(self, line: bytes) -> None:
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op == b"MSG" or op == b"HMSG":
            self._body = _message_line(op == b"HMSG", rest)
        elif op == b"PING":
            self.sink.on_ping()
        elif op == b"PONG":
            self.sink.on_pong()
        elif op == b"+OK":
            pass
        elif op == b"-ERR":
            self.sink.on_error(rest.strip().strip(b"'").decode(errors="replace"))
        elif op == b"INFO":
            try:
                info = orjson.loads(rest)
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"NATS: an INFO that is not JSON: {exc}") from None
            if not isinstance(info, dict):
                raise ProtocolError("NATS: an INFO that is not an object")
            self.sink.on_info(info)
        else:
            raise ProtocolError(f"NATS: unknown operation {line[:32]!r}")


def _message_line(headers: bool, rest: bytes) -> tuple[int, str, str, int, int]:
    """(sid, subject, reply, header bytes or -1, total bytes) of a MSG or HMSG line:
    ``<subject> <sid> [reply] <#bytes>``, HMSG ``... <#header bytes> <#total bytes>``.
    (Read for every message: plain statements, no list built per line.)"""
    args = rest.split()
    n = len(args) - headers  # the arguments of the same line of a MSG
    if n != 3 and n != 4:
        raise ProtocolError(f"NATS: a message line {rest[:64]!r}")
    reply = args[2].decode() if n == 4 else ""
    try:
        sid = int(args[1])
        total = int(args[-1])
        hlen = int(args[-2]) if headers else -1
    except ValueError:
        raise ProtocolError(f"NATS: a message line {rest[:64]!r}") from None
    if total < 0 or (headers and not 0 <= hlen <= total):
        raise ProtocolError(f"NATS: a message line {rest[:64]!r}")
    return sid, args[0].decode(), reply, hlen, total
