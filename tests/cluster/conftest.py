"""A real 3-node NATS JetStream cluster on loopback, shared by the tests of a module.

Skipped, with the reason, when ``nats-server`` is not installed (``make testdeps``
installs Debian's).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skns.cluster.natscluster import NatsCluster, find_server


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[NatsCluster]:
    if find_server() is None:
        pytest.skip("nats-server is not installed (make testdeps installs it)")
    with NatsCluster(3) as cluster:
        yield cluster
