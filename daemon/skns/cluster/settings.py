"""The ``[cluster]`` table: absent, or ``nats = []``, is the single-host mode."""

from __future__ import annotations

import dataclasses
import re
import socket
import urllib.parse
from pathlib import Path

from ..settings import Section
from . import tls

# A host's name goes into subjects and key-value keys: no dots, spaces or wildcards.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SCHEMES = ("nats", "tls")


@dataclasses.dataclass(frozen=True)
class ClusterSettings(Section):
    table = "cluster"
    # NATS server URLs (nats://host:port); empty: single-host mode.
    nats: tuple[str, ...] = ()
    # This host's identity in the cluster; empty: the hostname.
    name: str = ""
    # Executor partitions, fixed when the stream is made.
    partitions: int = 64
    # JetStream replicas of every stream and bucket (3 in production).
    replicas: int = 1
    # Seconds a partition lease lasts without renewal.
    lease_ttl: float = 3.0
    # Seconds to get JetStream's acknowledgement of a publish (tried again with the same
    # message id while they last) before answering an error.
    publish_timeout: float = 5.0
    # TLS to the servers (tls:// URLs, or servers that require it): the CA bundle their
    # certificates are checked against; empty: the system's trust store.
    tls_ca: Path | str = ""
    # The client certificate and its unencrypted key, both or neither, for servers that
    # verify their clients (mutual TLS); empty: none shown.
    tls_cert: Path | str = ""
    tls_key: Path | str = ""
    # The name the servers' certificates must carry; empty: the host of the URL connected
    # to (for a server the cluster announced by its address, that of the announcing one).
    tls_hostname: str = ""

    def validate(self) -> None:
        for url in self.nats:
            parts = urllib.parse.urlsplit(url)
            ok = parts.scheme in _SCHEMES and bool(parts.hostname)
            try:
                ok = ok and parts.port is not None
            except ValueError:
                ok = False
            self.require(ok, "nats", f"{url!r} is not nats://host:port")
        self.require(
            not self.name or _NAME.fullmatch(self.name) is not None,
            "name",
            "must be 1 to 64 letters, digits, '-' or '_'",
        )
        self.require(1 <= self.partitions <= 4096, "partitions", "must be within 1..4096")
        self.require(self.replicas in (1, 3, 5), "replicas", "must be 1, 3 or 5")
        for key in ("lease_ttl", "publish_timeout"):
            self.require(getattr(self, key) > 0, key, "must be > 0")
        tls.check(self)

    @property
    def enabled(self) -> bool:
        return bool(self.nats)

    @property
    def host_name(self) -> str:
        """This host's name: ``name``, else the hostname made safe for subjects."""
        if self.name:
            return self.name
        return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "host"
