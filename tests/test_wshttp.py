"""Plain HTTP on a WebSocket port: clear refusals with JSON bodies, on real loopback sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop
from websockets.asyncio.server import Server, serve
from websockets.sync.client import connect

from helpers import PLAIN_HTTP, echo, health, plain_http
from skns.wshttp import MAX_HEAD, RefusingServerConnection

OPEN_TIMEOUT = 0.5


class Running:
    """A refusing echo server on uvloop in a thread of the test process."""

    def __init__(self) -> None:
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop = threading.Event()
        self.server: Server
        self.loop: asyncio.AbstractEventLoop
        self._thread = threading.Thread(target=uvloop.run, args=(self._main(),), daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _main(self) -> None:
        async with serve(
            echo,
            "127.0.0.1",
            0,
            process_request=health,
            create_connection=RefusingServerConnection,
            open_timeout=OPEN_TIMEOUT,
        ) as server:
            self.server, self.loop = server, asyncio.get_running_loop()
            self._ready.set_result(None)
            while not self._stop.is_set():
                await asyncio.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    running = Running()
    yield running.port
    running.close()


def partial(port: int, head: bytes, shut: bool = False) -> tuple[bytes, float]:
    """Send part of a head (then half-close, with ``shut``); what comes until the close,
    and how long that took."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer, time.monotonic() - started


LINE = b"a" * 9000
CASES = {
    **{name: case for name, case in PLAIN_HTTP.items()},
    "post without a body": (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "get with a body": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 400),
    "no version": (b"GET /\r\n\r\n", 400),
    # No line end ever comes: refused at the first byte, not at the timeout (408).
    "tls": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32, 128)), 400),
    "binary": (b"\x00\x01\x02\x03", 400),
    "http/1.0": (b"GET / HTTP/1.0\r\n\r\n", 505),
    "bad key": (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
        400,
    ),
    "request line too long": (b"GET /" + LINE + b" HTTP/1.1\r\n\r\n", 414),
    "header line too long": (b"GET / HTTP/1.1\r\nX: " + LINE + b"\r\n\r\n", 431),
    "too many headers": (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    # Under websockets' limits per line and in number, 800 KB in all.
    "head too large": (b"GET / HTTP/1.1\r\n" + b"X: %s\r\n" % (b"a" * 8000) * 100 + b"\r\n", 431),
}


@pytest.mark.parametrize("request_, status", CASES.values(), ids=CASES.keys())
def test_plain_http_gets_a_clear_refusal_with_a_json_body(
    port: int, request_: bytes, status: int
) -> None:
    got, headers, body = plain_http(port, request_)
    assert got == status, body
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    if status == 426:
        assert headers["Upgrade"] == "websocket"
    if status == 405:
        assert headers["Allow"] == "GET"
    if request_[:1] == b"\x16":
        assert body["error"].endswith("a TLS handshake: this port is ws://")


def test_the_head_limit_is_counted_in_bytes(port: int) -> None:
    assert MAX_HEAD < 100 * 8000
    assert plain_http(port, CASES["head too large"][0])[2] == {
        "error": f"request head larger than {MAX_HEAD} bytes"
    }


def test_a_hooks_answer_and_a_websocket_client_are_as_before(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\nok")
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"


def test_a_head_that_stalls_gets_408_and_one_never_begun_a_bare_close(port: int) -> None:
    answer, took = partial(port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"application/json" in head, answer
    assert body == b'{"error":"request head not received in time"}'
    assert OPEN_TIMEOUT <= took < OPEN_TIMEOUT + 5
    assert partial(port, b"")[0] == b""  # connected, sent nothing: nothing owed


def test_a_head_cut_by_a_half_close_gets_400(port: int) -> None:
    answer, took = partial(port, b"GET / HTTP/1.1\r\nHost: x\r\n", shut=True)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"request head ended" in answer, answer
    assert took < OPEN_TIMEOUT  # at once, not at the timeout
    assert partial(port, b"", shut=True) == (b"", pytest.approx(0, abs=OPEN_TIMEOUT))


def test_a_head_that_stalls_while_the_server_stops_gets_503() -> None:
    running = Running()
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            time.sleep(0.1)
            running.loop.call_soon_threadsafe(running.server.close)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"shutting down" in answer, answer
    finally:
        running.close()
