"""A lean second connection to the NATS cluster, for the executor's two hot flows only.

The router's publishes and their JetStream acks, and the owners' pull deliveries, go
through this instead of nats-py, which costs 14-22 µs of CPU per publish and 15-20 µs
per message consumed (a ``Msg`` object, a queue and a task per subscription, an awaited
callback, headers through the email package): as much as the whole single-host path of
an event. Here a message is parsed (:mod:`skns.cluster.wire`) and handed to a plain
callback in the same loop iteration that read it, and what is published within one
loop iteration goes out in one write.

So do the requests the executor makes many times a second (consumers made, lease takes and
renewals, commits, roster and lease-holder reads: :meth:`Lean.request`). The rest (setting up
streams and buckets, consumer info, purges, the heartbeat) stays on nats-py's connection.

On a lost connection (the server died, a protocol error, no PONG to two PINGs) this
connects again to the next server of the list (the configured ones and those the cluster
announced), subscribes again, and first calls every ``on_lost`` callback: what was in
flight may be gone, and the callers' own logic (a publish tried again with its message
id, a reader making its consumer again) takes it from there. A publish while
disconnected raises :class:`NotConnected` at once, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import ssl
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import ProtocolError, SettingError, SknsError
from . import tls, wire
from .settings import ClusterSettings

log = logging.getLogger("skns.cluster")

CONNECT_TIMEOUT = 2.0  # seconds for the TCP connection and the handshake's PONG
RETRY = 0.5  # seconds between rounds over the server list
PING_INTERVAL = 2.0  # seconds between PINGs; two unanswered: the connection is dropped
MAX_OUTSTANDING_PINGS = 2
READ_PAUSE = 0.002  # seconds reading rests after each read, so that messages come in batches

Callback = Callable[[str, str, str, bytes], None]  # (subject, reply, status, payload)


class NotConnected(SknsError):
    """A publish on the lean connection while it is down."""


class _Protocol(asyncio.Protocol):
    def __init__(self, lean: Lean) -> None:
        self.lean = lean
        self.parser = wire.Parser(lean)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()  # kept: asyncio's lookup is a syscall (getpid)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            log.warning("NATS (lean connection): %s; connecting again", exc)
            self.lean.abort()
            return
        if READ_PAUSE and self.transport is not None:
            # What arrives meanwhile waits in the socket and comes in the next read:
            # one wakeup and read for many messages (each costs more than parsing one).
            self.transport.pause_reading()
            self.loop.call_later(READ_PAUSE, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lean.lost(self, exc)


class Lean:
    """One connection; ``subscribe`` and ``publish`` are plain calls (no await)."""

    def __init__(self, settings: ClusterSettings, role: str) -> None:
        self.settings = settings
        self.name = f"skns {settings.host_name} {role} (lean)"
        self.urls: list[str] = list(settings.nats)
        self._tls: ssl.SSLContext | None = None  # made at the first TLS connection
        # Announced servers' URLs -> the name their certificates are checked against.
        self._tls_names: dict[str, str] = {}
        self._failures: dict[str, str] = {}  # URL -> why its last try failed, as logged
        self.max_payload = 1024 * 1024  # until the server's INFO says
        self.on_lost: list[Callable[[], None]] = []
        self.disconnects = 0
        self._subs: dict[int, tuple[str, Callback]] = {}
        self._sids = itertools.count(1)
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._out: list[bytes] = []
        self._flushing = False
        self._handshake: asyncio.Future[None] | None = None
        self._info: asyncio.Future[dict[str, Any]] | None = None
        self._pings = 0  # PINGs sent and not answered
        # Index in urls of the next server to try: a random first, so that the processes of
        # the cluster spread over its servers (as nats-py's connections do).
        self._next = random.randrange(len(self.urls)) if self.urls else 0
        self.url = ""  # of the server connected to (or last connected to)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: dict[str, asyncio.Future[tuple[str, bytes]]] = {}  # token -> answer
        self._request_tokens = itertools.count()
        self._replies = ""  # prefix of the requests' reply subjects, once subscribed

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._handshake is None

    def status(self) -> dict[str, Any]:
        """For ``skns-ctl status``: the server of the lean connection, its losses."""
        return {
            "connected": self.connected,
            "server": shown(self.url) if self.connected else None,
            "disconnects": self.disconnects,
        }

    # -- opening and keeping the connection ---------------------------------------------------

    async def open(self, stop: asyncio.Event) -> bool:
        """Connect, trying the servers in turn until connected (True) or ``stop`` (False)."""
        while not stop.is_set():
            if await self._round():
                self._tasks = [asyncio.create_task(self._ping_loop())]
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY)
        return False

    async def _round(self) -> bool:
        """One try of every server, starting from the next; True once connected."""
        for _ in range(len(self.urls)):
            url = self.urls[self._next % len(self.urls)]
            self._next += 1
            try:
                await asyncio.wait_for(self._connect(url), CONNECT_TIMEOUT)
            # ssl.SSLError is an OSError; SettingError: a TLS file gone since the config load.
            except (OSError, TimeoutError, ProtocolError, SettingError) as exc:
                self.abort()
                self._failed(url, str(exc) or type(exc).__name__)
            else:
                self._failures.pop(url, None)
                return True
        return False

    def _failed(self, url: str, reason: str) -> None:
        """Log why a try failed: a warning when the reason is new for that server (a
        certificate not trusted, a refused client certificate would not show otherwise),
        then at debug level, every round."""
        level = logging.DEBUG if self._failures.get(url) == reason else logging.WARNING
        self._failures[url] = reason
        log.log(level, "NATS (lean connection): cannot connect to %s: %s; retrying",
                shown(url), reason)  # fmt: skip

    async def _connect(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        parts = urllib.parse.urlsplit(url)
        self.url = url  # the INFO's announced servers are named after it
        self._info = loop.create_future()
        self._handshake = loop.create_future()
        transport, protocol = await loop.create_connection(
            lambda: _Protocol(self), parts.hostname, parts.port
        )
        self._transport, self._protocol = transport, protocol
        info = await self._info
        if parts.scheme == "tls" or info.get("tls_required"):
            if self._tls is None:  # kept, as nats-py keeps its own: the trust store takes 0.14 s
                self._tls = tls.context(self.settings)
            name = self.settings.tls_hostname or self._tls_names.get(url) or parts.hostname
            secured = await loop.start_tls(transport, protocol, self._tls, server_hostname=name)
            if secured is None:
                raise ProtocolError("NATS: the TLS handshake ended the connection")
            self._transport = secured  # type: ignore[assignment]
        options: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "lang": "python-skns",
            "version": "1",
            "name": self.name,
        }
        # As nats-py reads the URL: nats://user:pass@host or nats://token@host.
        if parts.username and parts.password is not None:
            options["user"] = urllib.parse.unquote(parts.username)
            options["pass"] = urllib.parse.unquote(parts.password)
        elif parts.username:
            options["auth_token"] = urllib.parse.unquote(parts.username)
        self._transport.write(wire.connect(options) + wire.PING)
        await self._handshake  # the PONG (an -ERR raises)
        self._handshake = None
        self._pings = 0
        for sid, (subject, _) in self._subs.items():
            self._write(wire.sub(subject, sid))
        log.info("NATS (lean connection) connected to %s", shown(url))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def lost(self, protocol: _Protocol, exc: Exception | None = None) -> None:
        if protocol is not self._protocol:
            return  # an old connection's last word
        was_up = self.connected
        self._transport = self._protocol = None
        self._out.clear()
        # The reason, when there is one, is what a refused client certificate shows: TLS
        # 1.3's handshake ends on the client's side before the server has checked it.
        closed = f"NATS: the connection closed: {exc}" if exc else "NATS: the connection closed"
        for future in (self._info, self._handshake):
            if future is not None and not future.done():
                future.set_exception(ProtocolError(closed))
                future.exception()  # raised to _connect if it still waits; never logged
        if not was_up or self._closing:
            return  # a handshake that failed: _round tries the next server
        self.disconnects += 1
        log.warning("NATS (lean connection): connection lost; connecting again")
        for future in self._requests.values():
            if not future.done():
                future.set_exception(NotConnected("the connection to NATS was lost"))
                future.exception()  # raised to request() if it still waits; never logged
        self._tasks.append(asyncio.get_running_loop().create_task(self._reconnect()))
        for callback in self.on_lost:
            callback()

    async def _reconnect(self) -> None:
        while not self._closing and not await self._round():
            await asyncio.sleep(RETRY)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if not self.connected:
                continue
            if self._pings >= MAX_OUTSTANDING_PINGS:
                log.warning("NATS (lean connection): no PONG to %d PINGs", self._pings)
                self.abort()
                continue
            self._pings += 1
            self._write(wire.PING)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._flush()
            self._transport.close()

    # -- what the parser read -----------------------------------------------------------------

    def on_info(self, info: dict[str, Any]) -> None:
        self.max_payload = int(info.get("max_payload", self.max_payload))
        # As nats-py: announced servers with the scheme of the one announcing them, and
        # one announced by its address checked against that one's name (certificates name
        # hosts, announcements give addresses).
        here = urllib.parse.urlsplit(self.url)
        # And its credentials: a cluster asking for them asks on every node.
        credentials = here.netloc.rpartition("@")[0]
        prefix = f"{here.scheme}://{credentials}@" if credentials else f"{here.scheme}://"
        for address in info.get("connect_urls") or ():
            if not isinstance(address, str) or (url := prefix + address) in self.urls:
                continue
            self.urls.append(url)
            host = urllib.parse.urlsplit(url).hostname
            if _is_address(host) and here.hostname and not _is_address(here.hostname):
                self._tls_names[url] = here.hostname
        if self._info is not None and not self._info.done():
            self._info.set_result(info)

    def on_ping(self) -> None:
        self._write(wire.PONG)

    def on_pong(self) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)
        else:
            self._pings = 0

    def on_error(self, text: str) -> None:
        log.warning("NATS (lean connection): -ERR %s", text)
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ProtocolError(f"NATS refused the connection: {text}"))
            self._handshake.exception()  # raised to _connect; never logged

    def on_msg(self, sid: int, subject: str, reply: str, status: str, payload: bytes) -> None:
        entry = self._subs.get(sid)
        if entry is not None:
            entry[1](subject, reply, status, payload)

    # -- subscribing and publishing -----------------------------------------------------------

    def subscribe(self, subject: str, callback: Callback) -> int:
        """Messages on ``subject`` to ``callback`` (kept across reconnects); the sid."""
        sid = next(self._sids)
        self._subs[sid] = (subject, callback)
        if self.connected:
            self._write(wire.sub(subject, sid))
        return sid

    def unsubscribe(self, sid: int) -> None:
        if self._subs.pop(sid, None) is not None and self.connected:
            self._write(wire.unsub(sid))

    def publish(self, subject: str, payload: bytes, reply: str, headers: bytes = b"") -> None:
        """Send (in this loop iteration's write); raises NotConnected when down."""
        if not self.connected:
            raise NotConnected("not connected to NATS")
        if headers:
            self._write(wire.hpub(subject, reply, headers, payload))
        else:
            self._write(wire.pub(subject, reply, payload))

    def send(self, message: bytes) -> None:
        """Send a publish built beforehand (:func:`wire.hpub`: a message sent again as it
        is, built once); raises NotConnected when down."""
        if not self.connected:
            raise NotConnected("not connected to NATS")
        self._write(message)

    async def request(
        self, subject: str, payload: bytes, headers: bytes, timeout: float
    ) -> tuple[str, bytes]:
        """Publish and wait for the one answer: (its status, its payload). Raises
        NotConnected (not sent, or the connection dropped before the answer) or
        TimeoutError."""
        if not self._replies:
            self._replies = f"_INBOX.{uuid.uuid4().hex}."
            self.subscribe(self._replies + "*", self._answer)
        token = str(next(self._request_tokens))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._requests[token] = future
        # A timer failing the future rather than asyncio.timeout (a Python context manager
        # and a task lookup per request: every commit and lease renewal), nor wait_for: on
        # 3.11 it swallows a cancellation that comes with the answer in the same loop turn,
        # and a cancelled lease renewer would renew again. A plain await is cancelled then.
        timer = loop.call_later(timeout, _expire, future)
        try:
            self.publish(subject, payload, self._replies + token, headers)
            return await future
        finally:
            timer.cancel()
            del self._requests[token]

    def _answer(self, subject: str, reply: str, status: str, payload: bytes) -> None:
        future = self._requests.get(subject[len(self._replies) :])
        if future is not None and not future.done():
            future.set_result((status, payload))

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()


def shown(url: str) -> str:
    """``url`` without its credentials, for the logs and the status."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _is_address(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True


def _expire(future: asyncio.Future[tuple[str, bytes]]) -> None:
    """A request's time is up: its answer did not come."""
    if not future.done():
        future.set_exception(TimeoutError())
