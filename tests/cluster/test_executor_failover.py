"""The executor in cluster mode when hosts come and go and NATS nodes die: two skns hosts
(a third joins) on a real 3-node JetStream cluster with replicas = 3, a 0.1 s handler."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import wait_for
from skns.cluster.natscluster import NatsCluster
from skns.executor.placement import partition_of

from .exec_hosts import PARTITIONS, Feeder, Host, balanced, check, feed, running, wait_all_ran

DURATION = 0.1
ACCOUNTS = 100


@pytest.fixture(scope="module")
def pair(
    nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Host, Host]]:
    tmp = tmp_path_factory.mktemp("failover")
    with running(nats_cluster, tmp, "ab", duration=DURATION) as (a, b):
        yield a, b


def events(count: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"account_id": i % ACCOUNTS, "event_id": f"{tag}-{i}", "payload": {}} for i in range(count)
    ]


def check_run(feeders: list[Feeder], hosts: list[Host], timeout: float = 90) -> dict[int, Any]:
    """Every acked event ran, each account's in order (a rerun after a kill is allowed)."""
    for feeder in feeders:
        feeder.join(120)
    acked: dict[int, Any] = {}
    for feeder in feeders:
        acked.update(feeder.acked)
    assert acked
    low, high = min(acked), max(acked)
    runs = [r for r in wait_all_ran(hosts, acked, timeout) if low <= r[0] <= high]
    # A frame answered with an error (not confirmed within publish_timeout), or in flight
    # when its host was killed, may have been stored: its events run, unacked.
    unsure = sum(f.batch * (len(f.errors) + f.cut) for f in feeders)
    unacked = {r[0] for r in runs if r[0] not in acked}
    assert len(unacked) <= unsure, f"{len(unacked)} events ran that no client saw acked"
    errors = sum(len(f.errors) for f in feeders)
    print(f"{len(acked)} acked, {errors} error frames, {len(unacked)} unacked events ran")
    verdict = check(acked, [r for r in runs if r[0] in acked])
    assert verdict.ok, verdict.summary()
    return acked


def test_a_host_joining_mid_run_takes_its_share(
    pair: tuple[Host, Host], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    a, b = pair
    assert wait_for(lambda: balanced([a, b]), 30, "a and b balanced")
    feeders = feed([a, b], events(4000, "join"))
    time.sleep(1.0)
    c = Host(tmp_path / "c", nats_cluster, "c", duration=DURATION)
    try:
        c.wait_ready()
        # 16 partitions over 3 hosts: 6, 5 and 5.
        assert wait_for(lambda: balanced([a, b, c]), 30, "a, b and c balanced")
        check_run(feeders, [a, b, c])
        assert sum(s["handovers"] for h in (a, b) for s in h.stats("executor-shard")) > 0
    finally:
        c.stop()
    # c's graceful stop hands its partitions back at once.
    assert wait_for(lambda: balanced([a, b]), 30, "a and b balanced again")


def test_kill_9_of_a_shard_process_its_restart_runs_its_partitions_again(
    pair: tuple[Host, Host],
) -> None:
    a, b = pair
    assert wait_for(lambda: balanced([a, b]), 30, "a and b balanced")
    feeders = feed([a, b], events(3000, "shard"))
    time.sleep(1.0)
    shard = b.service.children("executor-shard")[0]
    held = set(shard["stats"]["partitions"])
    os.kill(shard["pid"], signal.SIGKILL)
    killed = time.monotonic()

    def back() -> bool:
        # The lease holders, as b's router reads them: host/shard/pid.
        holders = b.stats("executor-router")[0]["partitions"]
        pid = b.service.children("executor-shard")[0]["pid"]
        return pid != shard["pid"] and all(holders.get(str(p)) == f"b/0/{pid}" for p in held)

    # The supervisor restarts it; it takes its partitions again once their leases expired.
    wait_for(back, 30, "the restarted shard running its partitions")
    took = time.monotonic() - killed
    print(f"shard kill: its {len(held)} partitions ran again {took:.2f} s later")
    check_run(feeders, [a, b])
    assert balanced([a, b])


def test_kill_9_of_a_host_moves_its_partitions_and_every_acked_event_runs(
    pair: tuple[Host, Host],
) -> None:
    a, b = pair
    assert wait_for(lambda: balanced([a, b]), 30, "a and b balanced")
    # 30 events an account, 3 s of handler time: b is killed with half of its share to run.
    feeders = feed([a, b], events(3000, "kill"))
    time.sleep(1.0)
    theirs = b.owned()
    killed = time.monotonic()
    b.kill()
    wait_for(lambda: theirs <= a.owned(), 30, "b's partitions running on a")
    failover = time.monotonic() - killed
    print(f"failover: b's {len(theirs)} partitions ran on a {failover:.2f} s after the kill -9")
    # lease_ttl 3 s: its leases expire within 3 s of the kill, the roster entry too.
    assert failover < 8.0
    acked = check_run(feeders, [a, b])
    # Killed mid-run: a ran events of b's share that b had not got to.
    moved = [r for r in a.records() if r[0] in acked and partition_of(r[1], PARTITIONS) in theirs]
    assert moved, "b's share had run out before the kill"
    b.restart()
    b.wait_ready()
    assert wait_for(lambda: balanced([a, b]), 30, "b back with its share")


def test_kill_9_of_a_nats_node_mid_run(pair: tuple[Host, Host], nats_cluster: NatsCluster) -> None:
    a, b = pair
    assert wait_for(lambda: balanced([a, b]), 30, "a and b balanced")
    feeders = feed([a, b], events(4000, "node"))
    time.sleep(1.0)
    nats_cluster.kill(0)
    try:
        acked = check_run(feeders, [a, b], timeout=120)
        assert len(acked) > 1000
    finally:
        nats_cluster.restart(0)
        nats_cluster.wait_ready()
    assert wait_for(lambda: balanced([a, b]), 60, "a and b balanced after the outage")


def test_a_publish_the_stream_cannot_ack_gets_an_error_frame_never_an_ack(
    pair: tuple[Host, Host], nats_cluster: NatsCluster
) -> None:
    a, b = pair
    assert wait_for(lambda: a.health()[0] == 200, 60, "a healthy")
    nats_cluster.kill(1)
    nats_cluster.kill(2)  # the stream has no quorum: no leader can ack
    try:
        with a.connect() as ws:
            started = time.monotonic()
            ws.send(orjson.dumps({"account_id": "lost", "event_id": "lost-1", "payload": {}}))
            answer = orjson.loads(ws.recv(timeout=60))
            waited = time.monotonic() - started
        assert "ack" not in answer, answer
        assert "did not confirm" in answer["error"]
        assert waited >= 5.0 * 0.95  # publish_timeout
        router = lambda: a.stats("executor-router")[0]  # noqa: E731
        wait_for(lambda: router()["publish_errors"] >= 1, 10, "the error counted")
        assert router()["rejected"]["not stored by the cluster"] == 1
        wait_for(lambda: a.health()[0] == 503, 30, "a unhealthy without a stream leader")
    finally:
        nats_cluster.restart(1)
        nats_cluster.restart(2)
        nats_cluster.wait_ready()
    # The cluster comes back: the hosts take their partitions again and events run (the
    # event stream may elect its leader after the buckets: until then publishes time out).
    assert wait_for(lambda: a.health()[0] == 200 and b.health()[0] == 200, 90, "healthy again")

    def acked_again() -> bool:
        with a.connect() as ws:
            ws.send(orjson.dumps({"account_id": "back", "payload": {}}))
            return "ack" in orjson.loads(ws.recv(timeout=60))

    wait_for(acked_again, 90, "publishes acked again")
    check_run(feed([a, b], events(200, "after")), [a, b])
