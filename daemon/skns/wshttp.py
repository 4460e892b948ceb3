"""Plain HTTP on a WebSocket port: every refusal a clear answer with a JSON body.

``websockets`` answers a request it parsed but will not upgrade (no ``Upgrade``: 426; another
method than GET: 405; a bad key or version: 400; a request line or a header line too long, too
many headers: 414, 431) with a text/plain body, and one it cannot parse (a POST with a body,
garbage, TLS, a request line without a version) with a bare close: curl, a load balancer's
probe or a confused client learns nothing. It bounds each head line (8 KiB) and their number
(128) but not their sum, so a connection still in its handshake holds up to 1 MiB of head, and
one that does not end its head within ``open_timeout`` is aborted without a word.

:class:`RefusingServerConnection` (``serve(..., create_connection=...)``, the one class every
WebSocket port of skns uses: executor ingest, task server, relay simulator) answers all of
them ``{"error": "..."}`` with ``Content-Type: application/json`` (like the connection
limit's 503, :mod:`skns.wslimit`), then closes:

- 426 a GET without the upgrade (with ``Upgrade: websocket``), 405 another method (with
  ``Allow: GET``; also a POST with a body, which websockets could not parse), 400 a bad
  handshake or a head that cannot be parsed (at its first byte if that cannot start a request
  line: a TLS handshake, binary garbage, which send no line end to wait for), 414 a request
  line past 8 KiB, 431 a header line
  past 8 KiB, more than 128 headers or a head past :data:`MAX_HEAD` bytes in all;
- 408 a head begun and not ended within ``open_timeout`` (one that sent nothing is closed
  without a word; 503 if the server is stopping meanwhile).

Every other refusal websockets builds (503 while the server stops, 500 a failed hook) gets
the JSON body too: :meth:`_RefusingProtocol.reject` builds them all. A ``process_request``
hook's own answer (health, the connection limit) is its own: build it with
:func:`skns.wslimit.json_response`, not ``connection.respond``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
from collections.abc import Generator
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import (
    HeaderLineTooLong,
    InvalidMessage,
    RequestLineTooLong,
    SecurityError,
    TooManyHeaders,
)
from websockets.http11 import MAX_LINE_LENGTH, Request, Response
from websockets.protocol import CONNECTING, Protocol
from websockets.server import ServerProtocol

MAX_HEAD = 32 * 1024  # bytes of request head in all (nginx's default takes 4 lines of 8 KiB)

# The phrases websockets puts around a refusal's reason in its text bodies.
_PREFIX = "Failed to open a WebSocket connection: "
_LATE = "request head not received in time"
_TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS record carrying a handshake


class HeadTooLarge(SecurityError):
    """The request head passed :data:`MAX_HEAD` bytes."""


def _reason(text: str) -> str:
    """The reason in one of websockets' refusal texts: its first line, without the frame."""
    lines = text.strip().splitlines() or [""]
    return lines[0].removeprefix(_PREFIX).rstrip(".") or "refused"


class _RefusingProtocol(ServerProtocol):
    """websockets' server protocol with the refusals of the module docstring."""

    _head_bytes: int
    _request_line: bytes

    def reject(self, status: http.HTTPStatus | int, text: str) -> Response:
        response = super().reject(status, text)
        body = orjson.dumps({"error": _reason(text)})
        for name in ("Content-Type", "Content-Length"):
            del response.headers[name]
        response.headers["Content-Type"] = "application/json"
        response.headers["Content-Length"] = str(len(body))
        return dataclasses.replace(response, body=body)

    @property
    def head_begun(self) -> bool:
        """Whether a byte of the request head has arrived (a whole line, or part of one)."""
        return self._head_bytes > 0 or bool(self.reader.buffer)

    def _read_head_line(
        self, limit: int, too_long: type[Exception]
    ) -> Generator[None, None, bytes | bytearray]:
        if not self._head_bytes:
            # A request line starts with its method (GET): refused at its first byte, not
            # left waiting for a line end that a TLS handshake or binary garbage never sends.
            reader = self.reader
            while not reader.buffer and not reader.eof:
                yield
            first = bytes(reader.buffer[:1])
            if first == _TLS_HANDSHAKE:
                raise ValueError("not an HTTP request but a TLS handshake: this port is ws://")
            if first and not first.isupper():
                raise ValueError("not an HTTP request")
        line = yield from self.reader.read_line(limit, too_long)
        if not self._head_bytes:
            self._request_line = bytes(line)
        self._head_bytes += len(line)
        if self._head_bytes > MAX_HEAD:
            raise HeadTooLarge(f"request head larger than {MAX_HEAD} bytes")
        return line

    def parse(self) -> Generator[None]:
        # ServerProtocol.parse, with an answer for every head it refuses.
        if self.state is CONNECTING:
            self._head_bytes = 0
            self._request_line = b""
            try:
                request = yield from Request.parse(self._read_head_line)
            except Exception as exc:
                response = self._refusal(exc)
                if response is None:  # closed before it sent a byte: nothing to answer
                    self.send_eof()
                    self.parser = self.discard()
                    next(self.parser)
                else:
                    self.send_response(response)  # then discards what comes, to the EOF
                yield  # never resumed: send_eof and send_response replace this parser
                return
            self.events.append(request)
        yield from Protocol.parse(self)

    def _refusal(self, exc: Exception) -> Response | None:
        """The answer to a head ``Request.parse`` refused with ``exc``; None: no answer."""
        self.handshake_exc = exc
        if isinstance(exc, RequestLineTooLong):
            return self.reject(
                http.HTTPStatus.REQUEST_URI_TOO_LONG,
                f"request line longer than {MAX_LINE_LENGTH} bytes",
            )
        if isinstance(exc, HeaderLineTooLong):
            return self.reject(
                http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"header line longer than {MAX_LINE_LENGTH} bytes",
            )
        if isinstance(exc, TooManyHeaders | HeadTooLarge):
            return self.reject(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, str(exc))
        self.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
        self.handshake_exc.__cause__ = exc
        if isinstance(exc, EOFError):
            if not self.head_begun:
                return None
            return self.reject(http.HTTPStatus.BAD_REQUEST, "request head ended by a close")
        method = self._request_line.partition(b" ")[0]
        if method.isalpha() and method.isupper() and method != b"GET":
            response = self.reject(
                http.HTTPStatus.METHOD_NOT_ALLOWED,
                f"method {method.decode()} not allowed: a WebSocket handshake is a GET",
            )
            response.headers["Allow"] = "GET"
            return response
        return self.reject(http.HTTPStatus.BAD_REQUEST, f"malformed request head: {exc}"[:200])


class RefusingServerConnection(ServerConnection):
    """``serve(..., create_connection=RefusingServerConnection)``: see the module docstring."""

    protocol: _RefusingProtocol

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        # serve() builds a plain ServerProtocol: same layout, so its class can be swapped,
        # and its parser (started on nothing yet) started again as this class's.
        protocol.__class__ = _RefusingProtocol
        protocol.parser = protocol.parse()
        next(protocol.parser)
        super().__init__(protocol, *args, **kwargs)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        except asyncio.CancelledError:
            # open_timeout (websockets aborts the connection next), or the server stopping.
            protocol = self.protocol
            if self.request is None and protocol.head_begun and not protocol.eof_sent:
                if self.server.is_serving():
                    status, text = http.HTTPStatus.REQUEST_TIMEOUT, _LATE
                else:
                    status, text = http.HTTPStatus.SERVICE_UNAVAILABLE, "server is shutting down"
                protocol.send_response(protocol.reject(status, text))
                self.send_data()
            raise
