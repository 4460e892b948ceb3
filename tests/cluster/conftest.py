"""A real 3-node NATS JetStream cluster on loopback, shared by the tests of a module.

Skipped, with the reason, when ``nats-server`` is not installed (``make testdeps``
installs Debian's). Also the certificates of the TLS tests (``openssl``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skns.cluster.natscluster import NatsCluster, find_server

from . import tlsfiles


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[NatsCluster]:
    if find_server() is None:
        pytest.skip("nats-server is not installed (make testdeps installs it)")
    with NatsCluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and certificates it signed (:func:`tlsfiles.make`)."""
    if tlsfiles.find_openssl() is None:
        pytest.skip("openssl is not installed (make testdeps installs it)")
    return tlsfiles.make(tmp_path_factory.mktemp("tls"))
