"""The executor in cluster mode: two skns hosts (whole services, own state dirs and ports)
on a real 3-node JetStream cluster with replicas = 3, sharing 16 partitions."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.js.errors import NotFoundError

from helpers import metrics_table, wait_for
from skns.cluster.natscluster import NatsCluster
from skns.errors import ServiceNotRunning
from skns.executor import jetstream
from skns.executor.checker import verify
from skns.executor.placement import partition_of

from .exec_hosts import PARTITIONS, Host, all_records, balanced, running, send_batches, wait_all_ran


@pytest.fixture(scope="module")
def hosts(
    nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Host, Host]]:
    with running(nats_cluster, tmp_path_factory.mktemp("exec"), "ab") as (a, b):
        yield a, b


def in_range(runs: list[list[Any]], acked: dict[int, Any]) -> list[list[Any]]:
    """The runs of this test's events (seqs are stream sequences, shared by the module)."""
    low, high = min(acked), max(acked)
    return [r for r in runs if low <= r[0] <= high]


def test_events_fed_to_both_hosts_run_once_each_account_in_order(
    hosts: tuple[Host, Host],
) -> None:
    a, b = hosts
    assert wait_for(lambda: balanced([a, b]), 20, "partitions balanced")
    rng = random.Random(1)
    events = [{"account_id": rng.randrange(60), "payload": {"i": i}} for i in range(3000)]
    with a.connect() as on_a, b.connect() as on_b:
        acked = send_batches(on_a, events[:1500], batch=100)
        acked.update(send_batches(on_b, events[1500:], batch=1))
        # A single event's ack is a number, as on one host.
        on_a.send(orjson.dumps({"account_id": "x", "payload": None}))
        single = orjson.loads(on_a.recv(timeout=30))
    assert type(single["ack"]) is int
    acked[single["ack"]] = "x"
    runs = in_range(wait_all_ran([a, b], acked, 60), acked)
    verdict = verify(acked, runs)
    assert verdict.ok, verdict.summary()
    for host in (a, b):
        code, doc = host.health()
        assert code == 200, doc
        router = host.stats("executor-router")[0]
        assert router["publish_errors"] == 0
        assert router["hosts"] == ["a", "b"]
        assert router["partitions_running"] == len(router["partitions"]) == PARTITIONS // 2
        shards = host.stats("executor-shard")
        assert sorted(p for s in shards for p in s["partitions"]) == sorted(host.owned())
        assert [s["lease_losses"] for s in shards] == [0, 0]
        wait_for(
            lambda h=host: all(s["lag_total"] == 0 for s in h.stats("executor-shard")),
            10,
            "no lag",
        )
    # skns-ctl status shows them: connected servers, partitions and who runs them, lag.
    text = a.service.ctl("status").stdout
    assert "executor-router 0: " in text and "cluster.servers [127.0.0.1:" in text
    assert "publish_retries 0" in text and "partitions_running 8" in text
    assert "executor-shard 0: " in text and "lag." in text and "lease_losses 0" in text


def test_bad_frames_get_the_error_frames_of_one_host(hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    with a.connect() as ws:
        ws.send(b"{nope")
        assert orjson.loads(ws.recv(timeout=10)) == {"error": "not JSON"}
        ws.send(orjson.dumps([{"account_id": 1}, {"account_id": True}]))
        answer = orjson.loads(ws.recv(timeout=10))
        assert answer["index"] == 1 and "account_id" in answer["error"]


def trimmed(nats_cluster: NatsCluster, seq: int) -> bool:
    """Whether the stream no longer holds sequence ``seq`` (its owner purged it)."""

    async def ask() -> bool:
        nc = await nats.connect(nats_cluster.urls[0])
        try:
            await nc.jetstream().get_msg(jetstream.STREAM, seq)
        except NotFoundError:
            return True
        finally:
            await nc.close()
        return False

    return asyncio.run(ask())


def test_an_event_larger_than_a_nats_message_gets_an_error_frame(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # A frame may be larger than a NATS message (1 MiB) when max_frame_bytes allows it.
    with running(nats_cluster, tmp_path, "z", max_frame_bytes=4 * 1024 * 1024) as (z,):
        with z.connect() as ws:
            big = {"account_id": 1, "payload": "x" * (1024 * 1024)}
            ws.send(orjson.dumps([{"account_id": 1, "payload": 1}, big]))
            answer = orjson.loads(ws.recv(timeout=30))
            assert answer == {
                "error": "event 1 of this frame is larger than the cluster's 1048576 bytes:"
                " not stored"
            }
            # The router's connection to NATS is intact: the next frame is acked.
            ws.send(orjson.dumps({"account_id": 1, "payload": 2}))
            assert "ack" in orjson.loads(ws.recv(timeout=30))
        router = wait_for(
            lambda: (r := z.stats("executor-router")[0])["rejected"] and r, 10, "stats"
        )
        assert router["rejected"] == {"event too large for the cluster": 1}
        assert router["cluster"]["reconnects"] == 0
        assert router["lean"]["disconnects"] == 0  # the connection the events go through


def test_an_event_id_resent_to_the_other_host_is_stored_once(
    hosts: tuple[Host, Host], nats_cluster: NatsCluster
) -> None:
    a, b = hosts
    event = {"account_id": "dup", "event_id": f"once-{time.time()}", "payload": 1}
    with a.connect() as on_a:
        on_a.send(orjson.dumps(event))
        first = orjson.loads(on_a.recv(timeout=30))["ack"]
    # It ran, its partition's commit passed it and the stream was trimmed below it: the
    # duplicate window outlives the message.
    wait_all_ran([a, b], [first], 30)
    wait_for(lambda: trimmed(nats_cluster, first), 30, "the event trimmed from the stream")
    with b.connect() as on_b:
        on_b.send(orjson.dumps(event))
        again = orjson.loads(on_b.recv(timeout=30))["ack"]
        on_b.send(orjson.dumps({**event, "account_id": "other"}))  # same id, other account
        other = orjson.loads(on_b.recv(timeout=30))["ack"]
    assert again == first
    assert other != first
    wait_all_ran([a, b], [other], 30)
    time.sleep(0.5)
    assert Counter(r[0] for r in all_records([a, b]))[first] == 1


def test_a_message_on_a_partition_that_is_no_event_is_skipped_and_counted(
    hosts: tuple[Host, Host], nats_cluster: NatsCluster
) -> None:
    a, b = hosts
    partition = partition_of("next", PARTITIONS)

    async def publish(data: bytes) -> None:
        nc = await nats.connect(nats_cluster.urls[0])
        try:
            await nc.jetstream().publish(jetstream.subject(partition), data)
        finally:
            await nc.close()

    for junk in (b"not json", b"[[1], 2, 3]", b'{"account_id": 1}', b"[1, 2]"):
        asyncio.run(publish(junk))
    with a.connect() as ws:
        ws.send(orjson.dumps({"account_id": "next", "payload": 1}))
        seq = orjson.loads(ws.recv(timeout=30))["ack"]
    wait_all_ran([a, b], [seq], 30)

    def skipped() -> int:
        return sum(s["not_events"] for h in (a, b) for s in h.stats("executor-shard"))

    wait_for(lambda: skipped() == 4, 10, "4 messages skipped")


def side_host(nats_cluster: NatsCluster, root: Path, name: str, **cluster: Any) -> Host:
    """A host meant to be refused, with these [cluster] keys. With the metrics on too, so that
    the service has something left to run; its router refused twice (not five times, each a
    start of its own) is enough to stop its executor."""
    metrics = metrics_table(root, enabled=True, listen="127.0.0.1:0", workers=1)
    service = {"start_failures": 2, "restart_backoff": 0.1}
    return Host(root, nats_cluster, name, cluster, {"metrics": metrics, "service": service})


def test_a_second_host_with_a_live_name_refuses_to_start(
    hosts: tuple[Host, Host], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    a, b = hosts
    twin = side_host(nats_cluster, tmp_path / "twin", "a")
    try:
        # The supervisor contains it: the executor subsystem stops after its router keeps
        # dying at start, the service stays up, and the log says why.
        wait_for(
            lambda: "another host named 'a' is live" in twin.service.log(), 30, "refusal logged"
        )
        # Its executor's port is held by the supervisor and served by no router: a request
        # waits unanswered (a router answers /health within milliseconds).
        code, _ = twin.health(timeout=2.0)
        assert code != 200
        assert not twin.owned()
        wait_for(
            lambda: (
                "executor" in twin.service.status()["service"].get("stopped", {})
                or "cannot run" in twin.service.log()
            ),
            30,
            "executor stopped",
        )
        assert twin.alive
        assert twin.service.status()["service"]["state"] == "running"
    finally:
        twin.stop()
    assert wait_for(lambda: balanced([a, b]), 20, "a and b unaffected")


def refused(host: Host, message: str) -> None:
    """Until ``host``'s executor is stopped and its status names why (``message``)."""

    def trouble() -> str:
        try:
            return host.service.status()["trouble"].get("executor", "")
        except ServiceNotRunning:  # not up yet
            return ""

    wait_for(
        lambda: message in trouble(),
        20,
        f"executor refused: {message}",
        show=lambda _: host.service.log()[-3000:],
    )
    assert host.alive and host.service.status()["service"]["state"] == "running"
    assert not host.owned()
    assert message in host.service.ctl("status").stdout


def test_a_host_with_other_partitions_is_refused_and_every_event_runs_in_order(
    hosts: tuple[Host, Host], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # A host whose partitions differ would put an account's events in another partition than
    # the others do. Unrefused, it joins the roster: a and b hand it their share of the 16,
    # of which it runs only those its own 8-partition layout gives it, and the events a and
    # b publish to the rest are never run (and an account fed to it too runs in two
    # partitions at once).
    a, b = hosts
    c = side_host(nats_cluster, tmp_path / "c", "c", partitions=PARTITIONS // 2)
    try:
        path = c.service.config_path
        wait_for(
            lambda: (
                "c" in a.stats("executor-router")[0]["hosts"]
                or "[cluster] partitions = 8" in c.service.log()
            ),
            20,
            "c joined or refused",
        )
        rng = random.Random(3)
        events = [{"account_id": rng.randrange(200), "payload": {"i": i}} for i in range(2000)]
        with a.connect() as on_a, b.connect() as on_b:
            acked = send_batches(on_a, events[:1000], batch=100)
            acked.update(send_batches(on_b, events[1000:], batch=100))
        runs = in_range(wait_all_ran([a, b, c], acked, 20), acked)
        verdict = verify(acked, runs)
        assert verdict.ok, verdict.summary()
        refused(
            c,
            f"[cluster] partitions = 8 in {path}, but the cluster was made with partitions = 16:"
            " every host must have the same",
        )
        assert a.stats("executor-router")[0]["hosts"] == ["a", "b"]
    finally:
        c.stop()
    assert wait_for(lambda: balanced([a, b]), 20, "a and b unaffected")


def test_a_host_with_another_lease_ttl_is_refused(
    hosts: tuple[Host, Host], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # Renewing every 5 s leases that the buckets expire 3 s after a write, it would lose them
    # between renewals: its partitions would flap between owners.
    a, b = hosts
    c = side_host(nats_cluster, tmp_path / "c", "c", lease_ttl=30.0)
    try:
        refused(
            c,
            f"[cluster] lease_ttl = 30 in {c.service.config_path}, but the cluster was made with"
            " lease_ttl = 3:",
        )
        assert a.stats("executor-router")[0]["hosts"] == ["a", "b"]
    finally:
        c.stop()
    assert balanced([a, b])


def test_acked_events_that_never_ran_are_reported_with_every_shards_view(
    hosts: tuple[Host, Host],
) -> None:
    # A stall seen once must be diagnosable from the failure alone: the partitions of the
    # missing events and each shard's partitions, lag and connections.
    a, b = hosts
    never = 10**12  # a sequence the stream will not reach
    with pytest.raises(AssertionError) as failure:
        wait_all_ran([a, b], {never: "acct"}, 0.5)
    report = str(failure.value)
    assert "1 acked events never ran" in report
    assert f"missing events by partition: {{{partition_of('acct', PARTITIONS)}: 1}}" in report
    for host in (a, b):
        assert f"host {host.name} ({host.root}): health (200" in report
    assert report.count('"lean": {"connected": true') == 4  # 2 shards a host
    # Each partition's reader: its consumer, how many were made, pulls unanswered, idle time.
    assert report.count('"consumers": ') == PARTITIONS
