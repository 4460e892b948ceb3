"""The connection limit of a WebSocket server, on real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from helpers import echo, health
from skns.wslimit import ConnectionLimit
from skns.wsraw import upgrade_request

WAIT = 10.0


async def exchange(port: int, head: bytes) -> bytes:
    """Send ``head`` on a fresh connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = await asyncio.wait_for(reader.read(), WAIT)  # to EOF: the server closed it
    writer.close()
    return answer


async def settle(condition: object, limit: ConnectionLimit) -> None:
    """Until ``limit.open`` is ``condition`` (a slot frees once the loop saw the close)."""
    async with asyncio.timeout(WAIT):
        while limit.open != condition:
            await asyncio.sleep(0.01)


class Limited:
    def __init__(self, limit: ConnectionLimit, port: int) -> None:
        self.limit = limit
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"

    def connect(self) -> connect:  # websockets' connect is its own context manager
        return connect(self.url, open_timeout=WAIT)


@contextlib.asynccontextmanager
async def limited(n: int) -> AsyncIterator[Limited]:
    limit = ConnectionLimit(n, health)
    async with serve(echo, "127.0.0.1", 0, process_request=limit.process_request) as server:
        yield Limited(limit, server.sockets[0].getsockname()[1])


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(test())


async def assert_echoes(ws: ClientConnection, text: str) -> None:
    await ws.send(text)
    assert await asyncio.wait_for(ws.recv(), WAIT) == text


def test_past_the_limit_a_handshake_gets_503_with_json_and_the_others_go_on() -> None:
    async def main() -> None:
        async with limited(2) as server, server.connect() as one, server.connect() as two:
            answer = await exchange(server.port, upgrade_request())
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
            assert b"Content-Type: application/json" in head
            assert orjson.loads(body) == {"error": "too many connections", "limit": 2}
            # The websockets client sees the same refusal.
            with pytest.raises(InvalidStatus) as info:
                async with server.connect():
                    pass
            assert info.value.response.status_code == 503
            await assert_echoes(one, "one")
            await assert_echoes(two, "two")
            assert server.limit.refused == 2
            assert server.limit.stats() == {"max_connections": 2, "refused_connections": 2}

    run(main)


def test_a_closed_connection_frees_its_slot() -> None:
    async def main() -> None:
        async with limited(1) as server:
            async with server.connect() as ws:
                await assert_echoes(ws, "first")
            await settle(0, server.limit)
            async with server.connect() as ws:
                await assert_echoes(ws, "second")
            assert server.limit.refused == 0

    run(main)


def test_a_connection_cut_without_a_close_handshake_frees_its_slot_too() -> None:
    async def main() -> None:
        async with limited(1) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(upgrade_request())
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)).startswith(
                b"HTTP/1.1 101"
            )
            assert server.limit.open == 1
            writer.transport.abort()  # no close frame: only the TCP connection ends
            await settle(0, server.limit)
            async with server.connect() as ws:
                await assert_echoes(ws, "after")

    run(main)


def test_a_failed_handshake_holds_no_slot_once_closed() -> None:
    async def main() -> None:
        async with limited(1) as server:
            # Not an upgrade: 426, and the connection is closed.
            answer = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 426"), answer
            await settle(0, server.limit)
            async with server.connect() as ws:
                await assert_echoes(ws, "fine")

    run(main)


def test_the_servers_own_hook_is_answered_at_the_limit() -> None:
    async def main() -> None:
        async with limited(1) as server, server.connect():
            answer = await exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer
            assert server.limit.refused == 0

    run(main)
