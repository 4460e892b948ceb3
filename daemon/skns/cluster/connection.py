"""One process's connection to the NATS cluster, and the JetStream objects it makes.

Every host creates the streams and buckets it uses at start, with the same
configuration: creating an existing one with an equal configuration is a no-op
in JetStream, so whichever host starts first makes them. A differing one (say
``replicas`` changed) is updated to this host's configuration.

The connection reconnects on its own, forever, to any server of the cluster
(the configured ones and those the cluster announced); the first connection is
retried until the process is told to stop, so a host may start before NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from . import tls
from .settings import ClusterSettings

log = logging.getLogger("skns.cluster")

_RETRY = 0.5  # seconds between first-connection attempts and between reconnects
_ADMIN_TIMEOUT = 10.0  # seconds a stream, bucket or consumer request may take
RESEND = 1.0  # seconds after which a JetStream API request not answered is sent again


class JetStream(JetStreamContext):
    """nats-py's JetStream whose API requests (stream, consumer and bucket info, creates,
    gets, purges) are sent again every ``RESEND`` s while unanswered, until their timeout;
    the first answer to any copy is taken.

    nats-server 2.9 drops, without an answer, an API request that a stream's or consumer's
    leader should answer while that group has none (the stream just made, or its leader's
    node just died and the election not over): one request sent then waited out its whole
    timeout, 10 s for a set-up's ``STREAM.INFO`` seen in the tests, where a copy sent after
    the election is answered at once. These requests are idempotent (an info, a get, a
    create with the same configuration, a purge below a sequence); the publishes, which
    are not, do not come here."""

    async def _api_request(
        self, req_subject: str, req: bytes = b"", timeout: float = 5
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent: set[asyncio.Task[dict[str, Any]]] = set()
        try:
            while True:
                left = deadline - loop.time()
                if left > 0:
                    copy = super()._api_request(req_subject, req, timeout=left)
                    sent.add(asyncio.ensure_future(copy))
                # Past the deadline, no copy more: the last ones end on their own timeouts.
                wait = min(RESEND, left) if left > 0 else None
                done, sent = await asyncio.wait(
                    sent, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                # An answer or an error answer; or, once none is left waiting, the timeout.
                ended = [task for task in done if not isinstance(task.exception(), TimeoutError)]
                if ended or not sent:
                    return (ended or list(done))[0].result()
        finally:
            for task in sent:
                task.cancel()


class Connection:
    """``nc`` (core NATS) and ``js`` (JetStream) of one process, with its status."""

    def __init__(self, settings: ClusterSettings, role: str, buffer: bool = True) -> None:
        self.settings = settings
        self.role = role
        # False: a publish while disconnected fails at once instead of waiting in nats-py's
        # buffer to go out after the reconnect (when its sender may have given up on it).
        self.buffer = buffer
        self.nc: Client | None = None
        self.reconnects = 0
        self.disconnects = 0
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self._closing = False
        # Set, during a first connection, to the TLS error that ends it (see _connect).
        self._tls_failed: asyncio.Future[Exception] | None = None

    def jetstream(self, timeout: float) -> Any:
        """JetStream whose requests wait up to ``timeout`` s (see :class:`JetStream`)."""
        assert self.nc is not None
        return JetStream(self.nc, timeout=timeout)

    @property
    def js(self) -> Any:
        return self.jetstream(self.settings.publish_timeout)

    @property
    def admin(self) -> Any:
        """JetStream for making streams, buckets and consumers: slower than a publish when
        it must wait for a group's leader, so not held to ``publish_timeout``."""
        return self.jetstream(max(_ADMIN_TIMEOUT, self.settings.publish_timeout))

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def open(self, stop: asyncio.Event) -> bool:
        """Connect, retrying until connected (True) or ``stop`` is set (False).

        A first connection to servers that refuse it retries inside ``nats.connect``: the
        attempt is raced against ``stop``, so a stop never waits for it (the supervisor
        would SIGKILL the child after its timeout)."""
        while not stop.is_set():
            attempt = asyncio.create_task(self._connect())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not attempt.done():
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
                return False
            if attempt.result():
                log.info("connected to NATS at %s as %s", self._url(), self.settings.host_name)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RETRY)
        return False

    async def _connect(self) -> bool:
        """One connection attempt; False (logged) if it fails.

        nats-py 2.16 never returns from a first connection whose TLS handshake failed (a
        certificate not trusted, a name it does not carry): it waits for the close of a
        socket the handshake took over (nats-io/nats.py#718), and would try no server
        again. Its error callback hears of the failure first: the attempt is given up
        then, and made again by :meth:`open`."""
        s = self.settings
        try:
            # Not asked for: nats-py makes its default context (the system's trust store,
            # 0.14 s to load) only should a server require TLS.
            secure: dict[str, Any] = {"tls": tls.context(s)} if tls.configured(s) else {}
            if s.tls_hostname:
                secure["tls_hostname"] = s.tls_hostname
            self.nc = await self._first(
                nats.connect(
                    servers=list(s.nats),
                    name=f"skns {s.host_name} {self.role}",
                    connect_timeout=2,
                    reconnect_time_wait=_RETRY,
                    max_reconnect_attempts=-1,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    **secure,
                    **({} if self.buffer else {"pending_size": 0}),
                )
            )
        except Exception as exc:
            log.warning("cannot connect to NATS %s: %s; retrying", ", ".join(s.nats), exc)
            return False
        return True

    async def _first(self, connect: Coroutine[Any, Any, Client]) -> Client:
        """``nats.connect``'s client, or the TLS error that ended it (see _connect)."""
        self._tls_failed = failed = asyncio.get_running_loop().create_future()
        connecting = asyncio.ensure_future(connect)
        try:
            await asyncio.wait({connecting, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._tls_failed = None
            if not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
        if connecting.cancelled():
            raise failed.result()
        return connecting.result()

    async def close(self) -> None:
        self._closing = True
        if self.nc is not None:
            try:  # what was just sent (naks, acks) goes out before the connection closes
                await self.nc.flush(timeout=1)
            except Exception as exc:  # closing anyway, whatever nats-py raised
                log.debug("NATS flush: %s", exc)
            await self.nc.close()

    async def stream(self, config: api.StreamConfig) -> None:
        """Make the stream, or bring an existing one to ``config``."""
        try:
            await self.admin.add_stream(config)
        except BadRequestError:  # exists with another configuration
            await self.admin.update_stream(config)

    async def _error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc)
        if isinstance(exc, ssl.SSLError) and self._tls_failed and not self._tls_failed.done():
            self._tls_failed.set_result(exc)

    async def _disconnected(self) -> None:
        if self._closing:
            return
        self.disconnects += 1
        log.warning("disconnected from NATS; reconnecting")

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info("reconnected to NATS at %s", self._url())
        for callback in self.on_reconnect:
            await callback()

    def _url(self) -> str | None:
        url = self.nc.connected_url if self.nc is not None else None
        return f"{url.scheme}://{url.hostname}:{url.port}" if url else None

    def status(self) -> dict[str, Any]:
        """For ``skns-ctl status``: this host, the server it talks to, the cluster's servers."""
        nc = self.nc
        return {
            "host": self.settings.host_name,
            "connected": self.connected,
            "server": self._url() if self.connected else None,
            "servers": sorted({f"{u.hostname}:{u.port}" for u in nc.servers}) if nc else [],
            "reconnects": self.reconnects,
        }
