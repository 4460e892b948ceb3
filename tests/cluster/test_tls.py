"""Both connections of a process (nats-py's and the lean one) to nats-server processes
requiring TLS, with certificates of a throwaway CA: trusted through ``tls_ca``, refused
without it (logged, tried again), mutual TLS, a server name other than the URL's host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js import api

from skns import jsonexact
from skns.cluster.connection import Connection
from skns.cluster.lean import Lean
from skns.cluster.natscluster import find_server
from skns.cluster.settings import ClusterSettings
from skns.ports import free_port

from . import tlsfiles

WAIT = 10.0  # seconds a wait may last on a loaded machine: each is over within 1.5 s here

pytestmark = pytest.mark.skipif(
    find_server() is None, reason="nats-server is not installed (make testdeps installs it)"
)


def cluster(urls: list[str], files: Path, **tls: str) -> ClusterSettings:
    """Settings for ``urls``; ``tls`` names files of ``files`` (or, tls_hostname, a name)."""
    paths = {k: v if k == "tls_hostname" else files / v for k, v in tls.items()}
    return ClusterSettings(nats=tuple(urls), name="t", **paths)  # type: ignore[arg-type]


def url(server: tlsfiles.Server, host: str = "127.0.0.1") -> str:
    return f"tls://{host}:{server.port}"


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def both(settings: ClusterSettings) -> AsyncIterator[tuple[Connection, Lean]]:
    """nats-py's connection and the lean one, opening until the block ends (then stopped)."""
    conn, lean = Connection(settings, "test"), Lean(settings, "test")
    stop = asyncio.Event()
    opening = [asyncio.create_task(conn.open(stop)), asyncio.create_task(lean.open(stop))]
    try:
        yield conn, lean
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*opening), 10)
        await conn.close()
        await lean.close()


async def connected(settings: ClusterSettings) -> tuple[bool, bool]:
    """Whether each connection is up within WAIT s."""
    async with both(settings) as (conn, lean):
        with contextlib.suppress(AssertionError):
            await until(lambda: conn.connected and lean.connected, WAIT, "")
        return conn.connected, lean.connected


def failures(caplog: pytest.LogCaptureFixture, reason: str) -> tuple[int, int]:
    """Tries that failed giving ``reason``, logged: nats-py's connection's, the lean one's."""
    messages = [m for m in caplog.messages if "cannot connect to" in m and reason in m]
    lean = sum("(lean connection)" in m for m in messages)
    return len(messages) - lean, lean


async def refused(settings: ClusterSettings, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    """Neither connection gets up; each logs ``reason`` (a warning) and tries again."""
    caplog.set_level(logging.DEBUG, logger="skns.cluster")
    async with both(settings) as (conn, lean):
        await until(
            lambda: min(failures(caplog, reason)) >= 2,
            WAIT,
            f"not both refused twice with {reason!r}",
        )
        assert not conn.connected and not lean.connected
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("(lean connection)" in m and reason in m for m in warned), caplog.messages
    assert any("(lean connection)" not in m and reason in m for m in warned), caplog.messages


@pytest.mark.parametrize("scheme", ["tls", "nats"])  # nats://: TLS as the server's INFO asks
def test_both_connections_trust_a_private_ca_through_tls_ca(
    tls_files: Path, tmp_path: Path, scheme: str
) -> None:
    with tlsfiles.servers(tls_files, tmp_path) as (server,):
        settings = cluster([f"{scheme}://127.0.0.1:{server.port}"], tls_files, tls_ca="ca.pem")
        assert asyncio.run(connected(settings)) == (True, True)


def test_without_the_ca_both_are_refused_with_the_reason_logged_and_try_again(
    tls_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tlsfiles.servers(tls_files, tmp_path) as (server,):
        settings = cluster([url(server)], tls_files)  # the system's trust store
        asyncio.run(refused(settings, caplog, "CERTIFICATE_VERIFY_FAILED"))


def test_a_server_verifying_clients_refuses_one_without_a_certificate(
    tls_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tlsfiles.servers(tls_files, tmp_path, verify=True) as (server,):
        settings = cluster([url(server)], tls_files, tls_ca="ca.pem")
        asyncio.run(refused(settings, caplog, "ALERT_BAD_CERTIFICATE"))
        mutual = cluster(
            [url(server)], tls_files, tls_ca="ca.pem", tls_cert="client.pem", tls_key="client.key"
        )
        assert asyncio.run(connected(mutual)) == (True, True)


def test_a_server_back_with_a_certificate_not_trusted_is_logged_and_left_until_it_is(
    tls_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The reconnections, not the first connection: the same server restarted with a
    # certificate for another name, then with its own again.
    caplog.set_level(logging.DEBUG, logger="skns.cluster")

    def mismatches() -> tuple[int, int]:
        # nats-py's reconnection reports through its error callback ("NATS: ...").
        found = [m for m in caplog.messages if "IP address mismatch" in m]
        lean = sum("(lean connection)" in m for m in found)
        return len(found) - lean, lean

    async def scenario() -> None:
        port = free_port()
        settings = cluster([f"tls://127.0.0.1:{port}"], tls_files, tls_ca="ca.pem")
        async with both(settings) as (conn, lean):
            with tlsfiles.servers(tls_files, tmp_path, port=port):
                await until(lambda: conn.connected and lean.connected, WAIT, "not connected")
            await until(lambda: not conn.connected and not lean.connected, WAIT, "no loss seen")
            with tlsfiles.servers(tls_files, tmp_path, port=port, cert="named"):
                await until(lambda: min(mismatches()) >= 2, WAIT, "the mismatch not logged twice")
                assert not conn.connected and not lean.connected
            with tlsfiles.servers(tls_files, tmp_path, port=port):
                # nats-py says connected before it runs its reconnected callback (counted).
                await until(lambda: conn.connected and lean.connected and conn.reconnects > 0,
                            WAIT, "not reconnected")  # fmt: skip
            assert conn.reconnects == 1 and lean.disconnects == 1

    asyncio.run(scenario())


def test_tls_hostname_is_the_name_checked_in_the_servers_certificate(
    tls_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The certificate names nats.skns.test only; the URL says 127.0.0.1.
    with tlsfiles.servers(tls_files, tmp_path, cert="named") as (server,):
        settings = cluster([url(server)], tls_files, tls_ca="ca.pem")
        asyncio.run(refused(settings, caplog, "IP address mismatch"))
        named = cluster([url(server)], tls_files, tls_ca="ca.pem", tls_hostname="nats.skns.test")
        assert asyncio.run(connected(named)) == (True, True)


def test_a_lean_publish_is_acked_by_jetstream_and_a_message_delivered_over_tls(
    tls_files: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        settings = cluster([url(server)], tls_files, tls_ca="ca.pem")
        async with both(settings) as (conn, lean):
            await until(lambda: conn.connected and lean.connected, WAIT, "not connected")
            await conn.stream(api.StreamConfig(name="TLS", subjects=["tls.>"]))
            header = b"NATS/1.0\r\nNats-Msg-Id: m1\r\n\r\n"
            status, answer = await lean.request("tls.1", b"over tls", header, 5)
            assert status == ""
            assert jsonexact.loads(answer) == {"stream": "TLS", "seq": 1}
            assert (await conn.js.get_msg("TLS", 1)).data == b"over tls"
            got: list[Any] = []
            lean.subscribe("tls.echo", lambda *message: got.append(message))
            await lean.request("tls.1", b"", b"NATS/1.0\r\n\r\n", 5)  # the SUB went before
            assert conn.nc is not None
            await conn.nc.publish("tls.echo", b"to lean")
            await until(lambda: bool(got), WAIT, "nothing delivered to the lean connection")
            assert got == [("tls.echo", "", "", b"to lean")]

    with tlsfiles.servers(tls_files, tmp_path) as (server,):
        asyncio.run(scenario())


def test_a_server_the_cluster_announced_by_address_is_checked_against_the_name_used(
    tls_files: Path, tmp_path: Path
) -> None:
    # Certificates for localhost only; the cluster announces its servers as 127.0.0.1:port.
    async def scenario() -> None:
        settings = cluster([url(first, "localhost")], tls_files, tls_ca="ca.pem")
        async with both(settings) as (_, lean):
            announced = lambda: lean.connected and url(second) in lean.urls  # noqa: E731
            await until(announced, WAIT, "the second server was not announced")
            first.process.kill()
            await until(lambda: lean.disconnects == 1, WAIT, "the loss was not seen")
            await until(lambda: lean.connected, WAIT, "not connected to the announced server")
            assert lean.url == url(second)

    with tlsfiles.servers(tls_files, tmp_path, count=2, cert="local") as (first, second):
        asyncio.run(scenario())
