"""The HTTP side of a replica: ``POST /messages`` and ``GET /healthz`` (aiohttp).

Thin: check the request, hand ``(sender, text)`` to the group commit, send
back the body it produced. Status codes:

- 200 the message is committed (durably); the body is ``{"messages": [...]}``.
- 400 bad input (a request aiohttp cannot parse, a body its encoding or chunks do not
  decode, not JSON, not an object, a
  missing, non-string, empty or too long field, a content type other than
  ``application/json``); 413 a body larger than any valid message could be.
  Both with ``{"error": ...}``.
- 408 the body did not arrive within ``request_timeout``, or a request head begun did not
  end within it (a connection that sent nothing is closed without a word).
- 404 an unknown path, 405 another method (with ``Allow``), 417 an ``Expect`` other
  than ``100-continue``: with ``{"error": ...}`` too, as is every error.
- 503 the database is unreachable or refused the transaction: nothing of the
  message was stored (unless the connection was lost after the COMMIT was
  sent, which no client of any database can tell apart). Once the store knows
  the database is down, at once (see :mod:`skns.messenger.postgres`). A database
  that stops answering a transaction it was sent (frozen, partitioned) gets a 503
  that says the message may have been stored.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ..listeners import BACKLOG
from .answers import HISTORY, answer_bodies
from .batcher import GroupCommit
from .httplog import http_logger
from .message import BadMessage, max_body, parse_message
from .store import Post, Store, StoreTimeout, StoreUnavailable

log = logging.getLogger("skns.messenger.server")

JSON = "application/json"


def _error(status: int, reason: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": reason}), content_type=JSON)


class Replica:
    """One replica's request handling, bound to its store."""

    def __init__(
        self,
        store: Store,
        sender_max: int,
        text_max: int,
        batching: bool,
        batch_max: int,
        batch_delay: float = 0.0,
        request_timeout: float = 10.0,
        max_connections: int = 1024,
    ) -> None:
        self.store = store
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.refused_connections = 0
        self.client_gone = 0  # clients that hung up before their body was whole
        self.unread_closed = 0  # connections aborted: their answers unread for request_timeout
        late = orjson.dumps({"error": f"request head not received within {request_timeout:g} s"})
        # The 408 of a head that stalls.
        self.late_head = _REFUSAL % (b"408 Request Timeout", len(late), late)
        self.sender_max = sender_max
        self.text_max = text_max
        self.group: GroupCommit[Post, bytes] = GroupCommit(
            self._transaction, batch_max, batching, batch_delay
        )
        self.answers: Counter[int] = Counter()  # by HTTP status
        self.unavailable_reason = ""

    @property
    def max_body(self) -> int:
        return max_body(self.sender_max, self.text_max)

    async def _transaction(self, posts: list[Post]) -> list[bytes]:
        return answer_bodies(await self.store.commit(posts, HISTORY), HISTORY)

    def _answer(self, response: web.Response) -> web.Response:
        self.answers[response.status] += 1
        return response

    async def post_message(self, request: web.Request) -> web.Response:
        if request.content_type != JSON:
            return self._answer(_error(400, f"content type must be {JSON}"))
        try:
            async with asyncio.timeout(self.request_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(_error(413, f"body is larger than {self.max_body} bytes"))
        except TimeoutError:  # a client trickling its body: the connection is not kept
            response = _error(408, f"body not received within {self.request_timeout:g} s")
            response.force_close()
            return self._answer(response)
        except web.RequestPayloadError as exc:
            # A body its Content-Encoding or its chunks do not decode (corrupt gzip, a bad
            # chunk size): the client's error, not ours (it was a 500 with a traceback).
            # Where the next request would start is unknown: the connection is not kept.
            cause = exc.__cause__
            reason = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
            reason = " ".join(reason.split())[:200]
            response = _error(400, f"body cannot be read: {reason}")
            response.force_close()
            return self._answer(response)
        except ConnectionError:
            # The client hung up (or reset) before its body was whole: nothing was stored
            # and no one is left to answer. Its fault, not ours: counted, no traceback.
            self.client_gone += 1
            response = _error(400, "connection lost before the body arrived")
            response.force_close()
            return response
        try:
            post = parse_message(body, self.sender_max, self.text_max)
        except BadMessage as exc:
            return self._answer(_error(400, str(exc)))
        try:
            answer = await self.group.submit(post)
        except StoreTimeout as exc:
            self.unavailable_reason = str(exc)
            reason = f"database did not answer ({exc}); the message may have been stored"
            return self._answer(_error(503, reason))
        except StoreUnavailable as exc:
            self.unavailable_reason = str(exc)
            return self._answer(_error(503, "database unavailable; the message was not stored"))
        except Exception:
            log.exception("storing a message failed")
            return self._answer(_error(500, "internal error; the message was not stored"))
        return self._answer(web.Response(body=answer, content_type=JSON))

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue`` gets its interim answer, as from aiohttp's own handler,
        unless the body announced is larger than any message (a 413 at once: the client need
        not send it, RFC 9110 10.1.1); any other expectation a JSON 417 (aiohttp's is
        text/plain). Both refusals come before the body is read, and close."""
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.lower() != "100-continue":
            answer = _error(417, f"unknown Expect: {expect[:100]}")
        elif (request.content_length or 0) > self.max_body:
            answer = self._answer(_error(413, f"body is larger than {self.max_body} bytes"))
        else:
            if request.version >= HttpVersion11:
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        answer.force_close()  # the body was not read
        return answer

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            return _error(503, f"database unavailable: {exc}")
        return web.Response(
            body=orjson.dumps({"status": "ok", "store": self.store.kind}), content_type=JSON
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[_json_refusals])
        app.router.add_post("/messages", self.post_message, expect_handler=self._expect)
        app.router.add_get("/healthz", self.healthz)
        return app

    def stats(self) -> dict[str, Any]:
        g = self.group
        return {
            "store": self.store.kind,
            "batching": g.batching,
            "requests": sum(self.answers.values()),
            "ok": self.answers[200],
            "bad_request": self.answers[400] + self.answers[408] + self.answers[413],
            "unavailable": self.answers[503],
            "internal_error": self.answers[500],
            "transactions": g.batches,
            "failed_transactions": g.failed_batches,
            "mean_batch": round(g.posts / g.batches, 2) if g.batches else 0.0,
            "largest_batch": g.largest_batch,
            "transaction_seconds": round(g.transaction_seconds, 3),
            "refused_connections": self.refused_connections,
            "client_gone": self.client_gone,
            "unread_closed": self.unread_closed,
            "database_down": self.store.down,
            "last_unavailable": self.unavailable_reason[:200],
        }


async def serve(
    replica: Replica,
    host: str,
    port: int,
    stop: asyncio.Event,
    grace: float = 10.0,
    ready: Callable[[], None] = lambda: None,
    listener: socket.socket | None = None,
) -> None:
    """Serve until ``stop`` is set, then give the requests in flight ``grace`` s to finish.

    ``ready`` is called once the socket listens. A connection that has not sent a whole
    request head within ``request_timeout`` s of opening or of its previous answer is closed
    (aiohttp's keep-alive timer runs from both, and a partial head does not stop it), after
    a 408 if it had begun one (see :class:`_SlowClient`): a slowloris client holds a
    connection that long at most; the body has as long again, and a client that does not
    read its answers as long once the socket is full (aborted, counted ``unread_closed``). At
    most ``max_connections`` are open at once (see :func:`_bound_connections`).
    ``listener``: the supervisor's socket on ``host:port``, served instead of binding one."""
    runner = web.AppRunner(
        replica.app(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=grace,
        keepalive_timeout=replica.request_timeout,
        logger=http_logger(),
    )
    await runner.setup()
    _bound_connections(runner.server, replica)
    try:
        site: web.BaseSite
        if listener is not None:
            site = web.SockSite(runner, listener, backlog=BACKLOG)
        else:
            site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port  # port 0: the one it got
        log.info("messenger replica on http://%s:%d (%s)", host, bound, replica.store.kind)
        ready()
        await stop.wait()
    finally:
        await runner.cleanup()
        await replica.group.close()


@web.middleware
async def _json_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's routing refusals (404 unknown path, 405 wrong method, with its Allow
    header) with ``{"error": ...}`` like every other error, not text/plain."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = _error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            answer.headers["Allow"] = exc.headers["Allow"]
        return answer


class _SlowClient:
    """What times a slow client on one connection, kept in a wrapper of aiohttp's request
    parser (the handler's class is swapped in, so it can add no state of its own).

    A head begun and not ended: aiohttp closes a connection idle past its keep-alive time
    without a word, also one in the middle of a request head (a slowloris, or a client that
    stalled): that one is owed a 408 like a body that stalls. The parser cannot tell whether
    it holds part of a head, so the wrapper notes it: bytes fed before the first request or
    while the handler waits for its next one can only be the start of a head (a body is fed
    while its request is handled), and a whole request out of the parser ends it. A head
    that begins while the request before it is still handled (pipelined) is not noticed
    unless more of it comes once that one is answered. (Not by time: uvloop's clock is
    cached per loop turn, so a request answered in the turn its bytes came looked like bytes
    that came after it.)

    Answers not read: a client that sends requests and never reads the answers fills the
    socket, and the handler waits for it to drain, with no timeout in aiohttp: the connection
    was held for good. ``unread`` is the timer that aborts it once the transport has been
    paused (its buffer full) for ``request_timeout``.
    """

    __slots__ = ("_handler", "_parser", "begun", "replica", "unread")

    def __init__(self, handler: RequestHandler, replica: Replica) -> None:
        self._handler = handler
        self._parser = handler._parser
        self.replica = replica
        self.begun = False
        self.unread: asyncio.TimerHandle | None = None

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        parsed = self._parser.feed_data(data, *args, **kwargs)
        if parsed[0]:
            self.begun = False
        elif data and not self.begun:
            handler = self._handler
            waiter = handler._waiter  # None too before the handler's first wait began
            self.begun = handler._request_count == 0 or bool(waiter and not waiter.done())
        return parsed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class _JsonErrors(RequestHandler):
    """aiohttp's connection handler, answering what it refuses before any route (a malformed
    request line or header, a bad Content-Length) with ``{"error": ...}`` like every other
    error, not text/plain, and a request head that does not end in time with a 408.

    aiohttp builds that answer in ``handle_error``, which still logs (through
    :mod:`skns.messenger.httplog`) and checks that nothing was sent yet; only the body is
    replaced. A 500 names no internals. The handler's class is swapped in
    ``connection_made`` (aiohttp makes its handlers itself; both classes share one layout).
    """

    __slots__ = ()

    def _process_keepalive(self) -> None:
        # The conditions on which aiohttp's own closes the idle connection: due, and waiting
        # for a request. Before it does, a head begun meanwhile gets its 408.
        watch, waiter, transport = self._parser, self._waiter, self.transport
        closing = (
            not self._force_close
            and self._keepalive
            and self._loop.time() >= self._next_keepalive_close_time
            and waiter is not None
            and not waiter.done()
        )
        if closing and isinstance(watch, _SlowClient) and watch.begun and transport:
            watch.replica.answers[408] += 1
            transport.write(watch.replica.late_head)
        super()._process_keepalive()

    def pause_writing(self) -> None:
        super().pause_writing()
        watch = self._parser
        if isinstance(watch, _SlowClient) and watch.unread is None:
            watch.unread = self._loop.call_later(self._keepalive_timeout, self._unread)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._read_again()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._read_again()
        super().connection_lost(exc)

    def _read_again(self) -> None:
        watch = self._parser
        if isinstance(watch, _SlowClient) and watch.unread is not None:
            watch.unread.cancel()
            watch.unread = None

    def _unread(self) -> None:
        """Answers unread for request_timeout: aborted (a close would wait for them to drain)."""
        watch, transport = self._parser, self.transport
        if isinstance(watch, _SlowClient):
            watch.unread = None
            watch.replica.unread_closed += 1
        if transport is not None:
            transport.abort()
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)
        reason = message if status != 500 and message else HTTPStatus(plain.status).phrase
        answer = _error(plain.status, reason.strip().splitlines()[0])
        answer.force_close()
        return answer


class _Refused(RequestHandler):
    """A connection turned away by :func:`_bound_connections`: it has nothing to serve."""

    __slots__ = ()

    async def start(self) -> None:
        return


# A refusal written straight to the transport, before aiohttp reads a request: status
# line, then a JSON body.
_REFUSAL = (
    b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
)


def _bound_connections(server: web.Server | None, replica: Replica) -> None:
    """Answer 503 and close a connection that would pass ``replica.max_connections``.

    aiohttp has no such limit, and without one every slow client costs a descriptor and a
    handler until its timeout. Its server object learns of every new connection through
    ``connection_made`` before reading from it: that hook, wrapped, turns the surplus away.
    """
    assert server is not None  # set up
    admit = server.connection_made
    body = orjson.dumps({"error": "too many connections; try again"})
    refusal = _REFUSAL % (b"503 Service Unavailable", len(body), body)

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        if len(server.connections) >= replica.max_connections:
            replica.refused_connections += 1
            transport.write(refusal)
            transport.close()
            # The handler starts its request loop once this returns; unregistered, that
            # loop would fail an assertion (logged with a traceback per refusal).
            handler.__class__ = _Refused
            return
        handler.__class__ = _JsonErrors
        handler._parser = _SlowClient(handler, replica)
        admit(handler, transport)

    server.connection_made = connection_made  # type: ignore[method-assign]
