"""The client side of TLS to the NATS servers, one for both of a process's connections.

nats-py's connection (:mod:`skns.cluster.connection`) and the lean one
(:mod:`skns.cluster.lean`) check the servers' certificates against ``tls_ca`` (an
operator's own CA; empty: the system's trust store) and show ``tls_cert`` with
``tls_key`` to servers that verify their clients (mutual TLS). The same checks run at
config load (:func:`check`), so that a wrong path or file is an error naming its key
and file before any process starts, not a connection retried forever.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SettingError
from ..settings import unreadable

if TYPE_CHECKING:
    from .settings import ClusterSettings


def configured(settings: ClusterSettings) -> bool:
    """Whether TLS is asked for: a ``tls://`` URL, a CA or a client certificate."""
    return bool(
        settings.tls_ca
        or settings.tls_cert
        or any(url.startswith("tls://") for url in settings.nats)
    )


def context(settings: ClusterSettings) -> ssl.SSLContext:
    """A client context: hostname and chain checked against ``tls_ca`` or the system's
    trust store (loading it takes 0.14 s here), the client certificate loaded if given.
    Raises SettingError naming the key and the file."""
    ctx = _load(settings)
    if not settings.tls_ca:
        ctx.load_default_certs()
    return ctx


def check(settings: ClusterSettings) -> None:
    """What :func:`context` would refuse, without loading the system's trust store."""
    _load(settings)


def _load(settings: ClusterSettings) -> ssl.SSLContext:
    # What ssl.create_default_context() makes, before it loads the trust store.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.tls_ca:
        path = _read(settings, "tls_ca", b"-----BEGIN CERTIFICATE-----", "PEM certificate")
        try:
            ctx.load_verify_locations(cafile=path)
        except ssl.SSLError as exc:
            raise _error("tls_ca", path, _unreadable(exc)) from None
    if settings.tls_cert or settings.tls_key:
        if not settings.tls_key:
            raise SettingError("cluster.tls_key", "tls_cert is set: give its key too")
        if not settings.tls_cert:
            raise SettingError("cluster.tls_cert", "tls_key is set: give its certificate too")
        cert = _read(settings, "tls_cert", b"-----BEGIN CERTIFICATE-----", "PEM certificate")
        key = _read(settings, "tls_key", b"PRIVATE KEY-----", "PEM private key")
        try:
            ctx.load_cert_chain(cert, key, password=_no_passphrase)
        except _Encrypted:
            raise _error("tls_key", key, "is encrypted: give a key without a passphrase") from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise _error("tls_key", key, f"is not the key of {cert}") from None
            raise _error("tls_cert", cert, _unreadable(exc)) from None
    return ctx


def _read(settings: ClusterSettings, key: str, marker: bytes, what: str) -> Path:
    """The file of ``key``, readable and holding ``marker``."""
    path = Path(getattr(settings, key))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _error(key, path, unreadable(exc)) from None
    if marker not in data:
        raise _error(key, path, f"holds no {what}")
    return path


def _unreadable(exc: ssl.SSLError) -> str:
    # OpenSSL's words without the place in CPython's source: "[X509] PEM lib".
    return "OpenSSL cannot read it: " + re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))


def _error(key: str, path: Path, reason: str) -> SettingError:
    return SettingError(f"cluster.{key}", f"{path}: {reason}")


class _Encrypted(Exception):
    """The key asked for a passphrase."""


def _no_passphrase() -> bytes:
    # OpenSSL would otherwise prompt on the terminal, which a service does not have.
    raise _Encrypted
