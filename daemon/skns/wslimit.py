"""At most ``limit`` WebSocket connections per server; past it, 503 with a JSON body.

``websockets`` accepts every connection: each one costs a descriptor, its buffers and
whatever its handler holds (a task server connection that fetched a 5.5 MB result and
does not read holds that frame) until it closes, so enough of them exhaust the memory
or the descriptors of the process and take every other client down with it.

The limit is applied in the ``process_request`` hook of the opening handshake: a
connection admitted there holds a slot until its TCP connection is lost, whatever
happens in between (a handshake that fails after all, the handler ending, a close
handshake that times out); one refused gets ``{"error": "too many connections",
"limit": N}`` with status 503 and is closed, and the connections already open go on
as before. A connection still sending its request head holds no slot: websockets'
``open_timeout`` (10 s) bounds how long it can. The server's own hook (``GET /health``)
runs first and is answered at the limit too: a monitor can still see the server.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from collections.abc import Callable

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

log = logging.getLogger("skns.wslimit")

RequestHook = Callable[[ServerConnection, Request], Response | None]


def json_response(status: http.HTTPStatus, body: bytes, *extra: tuple[str, str]) -> Response:
    """An HTTP answer with a JSON body, for a ``process_request`` hook to return."""
    headers = Headers(
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra]
    )
    return Response(status.value, status.phrase, headers, body)


class ConnectionLimit:
    """``serve(..., process_request=ConnectionLimit(n, hook).process_request)``.

    ``open`` counts the connections holding a slot, ``refused`` those turned away."""

    def __init__(self, limit: int, hook: RequestHook | None = None) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._hook = hook
        self._body = orjson.dumps({"error": "too many connections", "limit": limit})
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if files != resource.RLIM_INFINITY and limit >= files:
            log.warning(
                "max_connections = %d is not below the open-file limit (%d): descriptors "
                "run out before the limit is reached (raise LimitNOFILE)",
                limit,
                files,
            )

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self._hook is not None:
            response = self._hook(connection, request)
            if response is not None:
                return response
        if self.open >= self.limit:
            self.refused += 1
            return json_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, self._body, ("Connection", "close")
            )
        self.open += 1
        connection.connection_lost_waiter.add_done_callback(self._free)
        return None

    def _free(self, _: asyncio.Future[None]) -> None:
        self.open -= 1

    def stats(self) -> dict[str, int]:
        return {"max_connections": self.limit, "refused_connections": self.refused}
