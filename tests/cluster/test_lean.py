"""The lean NATS connection against a real 3-node cluster and against servers that
misbehave (small asyncio servers on loopback speaking the protocol badly)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest

from skns.cluster import lean as lean_module
from skns.cluster.lean import Lean, NotConnected
from skns.cluster.natscluster import NatsCluster, find_server
from skns.cluster.settings import ClusterSettings
from skns.ports import free_port

INFO = b'INFO {"server_id":"fake","max_payload":4096,"headers":true}\r\n'


def settings(urls: list[str]) -> ClusterSettings:
    return ClusterSettings(nats=tuple(urls), name="t")


async def opened(lean: Lean, timeout: float = 10.0) -> None:
    stop = asyncio.Event()
    assert await asyncio.wait_for(lean.open(stop), timeout)


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


class Inbox:
    """What a subscription callback got."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, str, bytes]] = []

    def __call__(self, subject: str, reply: str, status: str, payload: bytes) -> None:
        self.got.append((subject, reply, status, payload))


def test_publish_and_subscribe_and_no_responders(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        lean = Lean(settings(nats_cluster.urls), "test")
        await opened(lean)
        other = await nats.connect(nats_cluster.urls[2])
        try:
            assert lean.max_payload > 0
            inbox = Inbox()
            lean.subscribe("lean.in.*", inbox)
            seen: list[Any] = []

            async def take(msg: Any) -> None:
                seen.append(msg)

            sub = await other.subscribe("lean.out", cb=take)
            await other.flush()
            await asyncio.sleep(0.2)  # the subscriptions cross the cluster's routes
            lean.publish("lean.out", b"plain", "lean.in.1")
            lean.publish("lean.out", b"with id", "lean.in.2", b"NATS/1.0\r\nNats-Msg-Id: m\r\n\r\n")
            await until(lambda: len(seen) == 2, 5, "the publishes never arrived")
            assert [m.data for m in seen] == [b"plain", b"with id"]
            assert seen[1].headers == {"Nats-Msg-Id": "m"}
            await other.publish(seen[0].reply, b"answer")
            # Nobody listens on this subject: the server answers 503 on the reply subject.
            lean.publish("lean.nobody", b"x", "lean.in.3")
            await until(lambda: len(inbox.got) == 2, 5, "no answer and no 503")
            assert ("lean.in.1", "", "", b"answer") in inbox.got
            assert ("lean.in.3", "", "503", b"") in inbox.got
            await sub.unsubscribe()
        finally:
            await other.close()
            await lean.close()

    asyncio.run(scenario())


def test_a_dead_node_is_reported_and_left_for_another_with_the_subscriptions(
    nats_cluster: NatsCluster,
) -> None:
    async def scenario() -> None:
        lean = Lean(settings(nats_cluster.urls), "test")
        losses: list[str] = []

        def lost() -> None:
            try:
                lean.publish("lean.after", b"x", "r")
                losses.append("sent")
            except NotConnected:
                losses.append("refused")  # not buffered for later

        lean.on_lost.append(lost)
        await opened(lean)
        first = nats_cluster.urls.index(lean.url)
        other = await nats.connect(nats_cluster.urls[(first + 1) % 3])
        inbox = Inbox()
        lean.subscribe("lean.after", inbox)
        try:
            nats_cluster.kill(first)
            await until(lambda: losses != [], 5, "the loss was not reported")
            assert losses == ["refused"] and lean.disconnects == 1
            await until(lambda: lean.connected, 10, "no reconnect to another node")
            deadline = asyncio.get_running_loop().time() + 10
            while not inbox.got:  # once the subscription is known on node 3
                assert asyncio.get_running_loop().time() < deadline, "not subscribed again"
                await other.publish("lean.after", b"again")
                await asyncio.sleep(0.1)
            assert inbox.got[0][3] == b"again"
        finally:
            await other.close()
            await lean.close()
            nats_cluster.restart(first)
            nats_cluster.wait_ready()

    asyncio.run(scenario())


def test_no_server_up_open_waits_until_stopped_and_publish_refuses() -> None:
    async def scenario() -> None:
        lean = Lean(settings([f"nats://127.0.0.1:{free_port()}"]), "test")
        stop = asyncio.Event()
        opening = asyncio.create_task(lean.open(stop))
        await asyncio.sleep(0.3)
        with pytest.raises(NotConnected):
            lean.publish("s", b"x", "r")
        stop.set()
        assert await asyncio.wait_for(opening, 5) is False
        await lean.close()

    asyncio.run(scenario())


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_server(serve: Serve) -> AsyncIterator[str]:
    """A server on loopback running ``serve`` for each connection; its URL."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.close()


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(INFO)
    assert (await reader.readline()).startswith(b"CONNECT {")
    assert await reader.readline() == b"PING\r\n"
    writer.write(b"PONG\r\n")


async def serve_silently(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Shake hands, then read and never answer until the client goes."""
    await handshake(reader, writer)
    await read_until_gone(reader, writer)


async def read_until_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.readline():
            pass
    writer.close()


def test_garbage_from_the_server_drops_the_connection_and_connects_again() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await handshake(reader, writer)
        if connections == 1:
            writer.write(b"MSG s 1 3\r\nabcXX")  # 3 bytes not followed by CRLF
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client goes
        writer.close()

    async def scenario() -> None:
        async with fake_server(serve) as url:
            lean = Lean(settings([url]), "test")
            lost: list[int] = []
            lean.on_lost.append(lambda: lost.append(1))
            lean.subscribe("s", Inbox())
            await opened(lean)
            assert lean.max_payload == 4096  # from the server's INFO
            await until(lambda: lost == [1] and connections == 2 and lean.connected, 5,
                        "the broken connection was not replaced")  # fmt: skip
            await lean.close()

    asyncio.run(scenario())


def test_a_refused_handshake_is_not_a_connection() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(INFO)
        await reader.readline()
        writer.write(b"-ERR 'Authorization Violation'\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with fake_server(serve) as url:
            lean = Lean(settings([url]), "test")
            stop = asyncio.Event()
            opening = asyncio.create_task(lean.open(stop))
            await asyncio.sleep(0.5)
            assert not lean.connected
            stop.set()
            assert await asyncio.wait_for(opening, 5) is False
            await lean.close()

    asyncio.run(scenario())


def test_a_server_that_stops_answering_pings_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_module, "PING_INTERVAL", 0.05)
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await serve_silently(reader, writer)  # PINGs never answered

    async def scenario() -> None:
        async with fake_server(serve) as url:
            lean = Lean(settings([url]), "test")
            await opened(lean)
            await until(lambda: lean.disconnects >= 1 and connections >= 2, 5,
                        "a silent server was kept")  # fmt: skip
            await lean.close()

    asyncio.run(scenario())


def test_a_request_fails_at_once_when_the_connection_drops_and_times_out_unanswered() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                if line.startswith(b"HPUB drop "):
                    break  # hangs up on that request
        writer.close()

    async def scenario() -> None:
        async with fake_server(serve) as url:
            lean = Lean(settings([url]), "test")
            await opened(lean)
            with pytest.raises(TimeoutError):
                await lean.request("quiet", b"x", b"NATS/1.0\r\n\r\n", 0.2)
            started = asyncio.get_running_loop().time()
            with pytest.raises(NotConnected):
                await lean.request("drop", b"x", b"NATS/1.0\r\n\r\n", 10)
            assert asyncio.get_running_loop().time() - started < 5
            await lean.close()

    asyncio.run(scenario())


def test_a_request_cancelled_as_its_answer_comes_is_cancelled() -> None:
    # A lease renewer cancelled in the loop turn its answer came in must stop: with
    # asyncio.wait_for (3.11) the cancellation was swallowed and the renewer kept renewing
    # the lease of a stopped partition, so no other owner could take it.
    async def scenario() -> None:
        async with fake_server(serve_silently) as url:
            lean = Lean(settings([url]), "test")
            await opened(lean)
            asking = asyncio.create_task(lean.request("s", b"x", b"NATS/1.0\r\n\r\n", 5))
            await until(lambda: bool(lean._requests), 5, "the request was not sent")
            (token,) = lean._requests
            lean._answer(lean._replies + token, "", "", b"answer")  # the same turn:
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            await lean.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("flags", "userinfo", "connects"),
    [
        (["--auth", "s3cret"], "s3cret@", True),
        (["--auth", "s3cret"], "wrong@", False),
        (["--user", "skns", "--pass", "p%40ss"], "skns:p%2540ss@", True),  # p%40ss, quoted
        (["--user", "skns", "--pass", "p%40ss"], "skns:nope@", False),
    ],
)
def test_a_server_asking_for_a_token_or_a_password_gets_the_urls(
    tmp_path: Any, flags: list[str], userinfo: str, connects: bool
) -> None:
    # As nats-py reads the URL: nats://token@host (a token, not a user with no password)
    # and nats://user:pass@host, percent-decoded.
    server = find_server()
    assert server is not None
    port = free_port()
    args = [server, "-a", "127.0.0.1", "-p", str(port), *flags]
    with subprocess.Popen(args, stderr=subprocess.DEVNULL) as process:
        try:

            async def scenario() -> bool:
                lean = Lean(settings([f"nats://{userinfo}127.0.0.1:{port}"]), "test")
                stop = asyncio.Event()
                opening = asyncio.create_task(lean.open(stop))
                # Refused, it tries again until stopped (the server may also not listen yet).
                await asyncio.wait({opening}, timeout=1.5)
                stop.set()
                connected = await asyncio.wait_for(opening, 5)
                await lean.close()
                return connected

            assert asyncio.run(scenario()) is connects
        finally:
            process.terminate()


def test_a_server_the_cluster_announces_is_given_the_same_credentials() -> None:
    # A cluster asking for a token asks on every node: the lean connection moving to a node
    # it only knows from an INFO's connect_urls must send the token there too.
    connects: list[dict[str, Any]] = []

    async def second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(INFO)
        connects.append(json.loads((await reader.readline()).removeprefix(b"CONNECT ")))
        assert await reader.readline() == b"PING\r\n"
        writer.write(b"PONG\r\n")
        await read_until_gone(reader, writer)

    async def scenario() -> None:
        async with fake_server(second) as other:
            announced = other.removeprefix("nats://")

            async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                info = {"server_id": "one", "headers": True, "connect_urls": [announced]}
                writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
                connects.append(json.loads((await reader.readline()).removeprefix(b"CONNECT ")))
                assert await reader.readline() == b"PING\r\n"
                writer.write(b"PONG\r\n")
                await writer.drain()
                writer.close()  # then gone: the next server is the announced one

            async with fake_server(first) as url:
                lean = Lean(settings([url.replace("nats://", "nats://s3cret@")]), "test")
                await opened(lean)
                await until(lambda: len(connects) == 2 and lean.connected, 5, "not moved")
                assert [c.get("auth_token") for c in connects] == ["s3cret", "s3cret"]
                assert "s3cret" not in str(lean.status())  # never shown
                await lean.close()

    asyncio.run(scenario())
