"""The task server in cluster mode: two hosts (two task servers with their own state
dirs and ports) on a real 3-node JetStream cluster with replicas = 3."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from websockets.sync.client import ClientConnection, connect

from helpers import wait_for
from skns.cluster.natscluster import NatsCluster
from skns.tasks.local import LocalServer, local_settings

HARD_LIMIT = 1.0
SOFT_MAX = 300_000  # soft jobs up to here, with a generous limit; larger ones are hard
SOFT_LIMIT = 60.0
LONG_JOB = 400_000  # a hard job of several seconds: always past HARD_LIMIT
BIG = 250_000  # 250000! has 1,240,915 digits: more than a NATS message (1 MB)
MEDIUM = 50_000  # a few tenths of a second
WAIT = 30.0


def host(tmp: Path, cluster: NatsCluster, name: str, **tasks: Any) -> LocalServer:
    table = {"nats": cluster.urls, "name": name, "replicas": 3}
    settings = local_settings(
        tmp / name,
        cluster=table,
        **{
            "soft_max": SOFT_MAX,
            "soft_limit": SOFT_LIMIT,
            "hard_limit": HARD_LIMIT,
            "soft_workers": 1,
            "hard_workers": 1,
            **tasks,
        },
    )
    return LocalServer(settings)


@pytest.fixture(scope="module")
def hosts(
    nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalServer, LocalServer]]:
    tmp = tmp_path_factory.mktemp("hosts")
    with host(tmp, nats_cluster, "a") as a, host(tmp, nats_cluster, "b") as b:
        wait_for(lambda: "cluster" in a.stats() and "cluster" in b.stats(), what="stats")
        yield a, b


def ws(server: LocalServer) -> ClientConnection:
    return connect(server.url, max_size=None, open_timeout=10)


def ask(conn: ClientConnection, request: dict[str, Any]) -> dict[str, Any]:
    conn.send(json.dumps(request))
    return next_frame(conn)


def next_frame(conn: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    return json.loads(conn.recv(timeout=timeout))


def test_a_task_submitted_on_a_is_fetched_on_b(hosts: tuple[LocalServer, LocalServer]) -> None:
    a, b = hosts
    with ws(a) as on_a, ws(b) as on_b:
        started = time.monotonic()
        ack = ask(on_a, {"type": "factorial", "number": 20})
        assert ack["type"] == "result"
        task_id = ack["task_id"]
        pushed = next_frame(on_a)
        assert pushed == {"type": "success", "task_id": task_id, "result": math.factorial(20)}
        round_trip = time.monotonic() - started
        assert ask(on_b, {"type": "result", "task_id": task_id}) == pushed
        assert ask(on_a, {"type": "result", "task_id": task_id}) == pushed
    print(f"submit on a to success pushed on a, through the cluster: {round_trip * 1000:.1f} ms")


def test_a_host_with_another_result_ttl_is_refused(
    hosts: tuple[LocalServer, LocalServer], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    # The results bucket expires entries result_ttl after they are written, as the first host
    # made it: a host set otherwise would keep its results as long as the bucket says.
    other = host(tmp_path, nats_cluster, "c", result_ttl=60.0)
    with pytest.raises(RuntimeError, match="exited with 1"):
        other.start()
    assert other.stats()["failed"] == (
        f"LayoutMismatch: [tasks] result_ttl = 60 in {other.settings.path}, but the cluster was"
        " made with result_ttl = 3600: every host must have the same (results would expire"
        " after the bucket's time, not this host's); set it to 3600, or remake the cluster's"
        " streams and buckets to change it (README, cluster mode)"
    )
    with ws(hosts[0]) as on_a:  # the others go on
        assert ask(on_a, {"type": "factorial", "number": 5})["type"] == "result"


def test_an_unknown_id_is_not_found_on_any_host(hosts: tuple[LocalServer, LocalServer]) -> None:
    with ws(hosts[1]) as on_b:
        answer = ask(on_b, {"type": "result", "task_id": "00000000-0000-4000-8000-000000000000"})
    assert answer["type"] == "error" and answer["result"] == "Task not found"


def test_a_pending_task_fetched_on_b_is_pushed_to_b(
    hosts: tuple[LocalServer, LocalServer],
) -> None:
    a, b = hosts
    with ws(a) as on_a, ws(b) as on_b:
        task_id = ask(on_a, {"type": "factorial", "number": MEDIUM})["task_id"]
        pending = ask(on_b, {"type": "result", "task_id": task_id})
        assert pending["type"] == "pending" and pending["task_id"] == task_id
        assert pending["status"] in ("queued", "running")
        pushed_b = on_b.recv(timeout=WAIT)
        pushed_a = on_a.recv(timeout=WAIT)
    assert pushed_a == pushed_b
    assert isinstance(pushed_b, str)
    assert pushed_b.startswith(f'{{"type":"success","task_id":"{task_id}","result":3347320')


def test_a_running_task_says_so_on_every_host(hosts: tuple[LocalServer, LocalServer]) -> None:
    a, b = hosts
    with ws(a) as on_a, ws(b) as on_b:
        task_id = ask(on_a, {"type": "factorial", "number": BIG})["task_id"]

        def status() -> str:
            return ask(on_b, {"type": "result", "task_id": task_id})["status"]

        wait_for(lambda: status() == "running", what="running on b")
        assert ask(on_a, {"type": "result", "task_id": task_id})["status"] == "running"
        pushed = [on_a.recv(timeout=WAIT), on_b.recv(timeout=WAIT)]
        # Pushed once to each connection, however often it asked while pending.
        on_b.send(json.dumps({"type": "result", "task_id": task_id}))
        fetched = on_b.recv(timeout=WAIT)
    assert pushed[0] == pushed[1] == fetched


def test_a_hard_job_past_its_limit_is_a_timeout_error(
    hosts: tuple[LocalServer, LocalServer],
) -> None:
    a, b = hosts
    with ws(a) as on_a, ws(b) as on_b:
        started = time.monotonic()
        task_id = ask(on_a, {"type": "factorial", "number": LONG_JOB})["task_id"]
        outcome = next_frame(on_a)
        elapsed = time.monotonic() - started
        assert outcome["type"] == "error" and outcome["result"] == "Timeout error"
        assert outcome["task_id"] == task_id
        assert ask(on_b, {"type": "result", "task_id": task_id}) == outcome
    assert HARD_LIMIT <= elapsed < HARD_LIMIT + 10
    # Killed once, on whichever host pulled it (stats are published twice a second).
    wait_for(lambda: sum(s.stats()["hard"]["timed_out"] for s in hosts) == 1, what="timed_out")
    time.sleep(1.5)
    assert sum(s.stats()["hard"]["timed_out"] for s in hosts) == 1  # and not run again


def test_a_result_bigger_than_a_nats_message_is_fetched_whole(
    hosts: tuple[LocalServer, LocalServer],
) -> None:
    a, b = hosts
    big_before = sum(s.stats()["cluster"]["stored_big"] for s in hosts)
    with ws(a) as on_a, ws(b) as on_b:
        task_id = ask(on_a, {"type": "factorial", "number": BIG})["task_id"]
        pushed = on_a.recv(timeout=WAIT)
        fetched = _fetch_raw(on_b, task_id)
    assert len(pushed) > 1_200_000
    assert fetched == pushed
    digits = pushed.rpartition('"result":')[2].rstrip("}")
    # The digit count of BIG! from the log-gamma function; its trailing zeros from its fives.
    assert len(digits) == math.floor(math.lgamma(BIG + 1) / math.log(10)) + 1
    zeros = sum(BIG // 5**k for k in range(1, 10))
    assert digits.endswith("0" * zeros) and digits[-zeros - 1] != "0"
    wait_for(
        lambda: sum(s.stats()["cluster"]["stored_big"] for s in hosts) == big_before + 1,
        what="stored in the object store",
    )


def _fetch_raw(conn: ClientConnection, task_id: str) -> str:
    conn.send(json.dumps({"type": "result", "task_id": task_id}))
    frame = conn.recv(timeout=WAIT)
    assert isinstance(frame, str)
    return frame


def test_both_hosts_pull_jobs_and_status_shows_the_cluster(
    hosts: tuple[LocalServer, LocalServer],
) -> None:
    a, b = hosts
    before = [s.stats()["cluster"]["pulled"] for s in hosts]
    with ws(a) as on_a:
        for n in range(40):  # one soft worker per host: both get work
            on_a.send(json.dumps({"type": "factorial", "number": 1500 - n}))
        frames = [next_frame(on_a) for _ in range(80)]
    acked = {f["task_id"] for f in frames if f["type"] == "result"}
    done = {f["task_id"] for f in frames if f["type"] == "success"}
    assert len(acked) == 40 and done == acked

    def pulled() -> list[int]:
        return [s.stats()["cluster"]["pulled"] - p for s, p in zip(hosts, before, strict=True)]

    wait_for(lambda: sum(pulled()) == 40, what="40 pulled")
    assert min(pulled()) > 0, pulled()  # both hosts ran some
    # JetStream holds the jobs: no local journal (nor a journal file) in cluster mode.
    assert "journal" not in a.stats()
    assert not list(a.settings.service.state_dir.glob("tasks/journal.jsonl"))
    stats = a.stats()["cluster"]
    assert stats["host"] == "a" and stats["connected"] is True
    assert stats["server"].startswith("nats://127.0.0.1:")
    assert len(stats["servers"]) == 3
    with urllib.request.urlopen(b.health_url, timeout=5) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["cluster"]["host"] == "b"


def test_a_malformed_job_on_the_stream_is_dropped_and_the_hosts_go_on(
    nats_cluster: NatsCluster, hosts: tuple[LocalServer, LocalServer]
) -> None:
    async def publish_garbage() -> None:
        nc = await nats.connect(nats_cluster.urls[1])
        try:
            js = nc.jetstream()
            for payload in (b"not json", b'{"id": 5, "n": 3}', b'{"id": "x", "n": -1}'):
                await js.publish("skns.tasks.soft", payload)
        finally:
            await nc.close()

    asyncio.run(publish_garbage())
    with ws(hosts[0]) as on_a:
        task_id = ask(on_a, {"type": "factorial", "number": 7})["task_id"]
        assert next_frame(on_a) == {"type": "success", "task_id": task_id, "result": 5040}


def test_a_job_published_again_with_its_task_id_runs_once(
    nats_cluster: NatsCluster, hosts: tuple[LocalServer, LocalServer]
) -> None:
    # What a host's retry of a publish that went unanswered sends: the same job, the same id.
    def pulled() -> int:
        return sum(s.stats()["cluster"]["pulled"] for s in hosts)

    time.sleep(1.5)  # stats are published twice a second: the jobs of the tests before count
    before = pulled()
    with ws(hosts[0]) as on_a:
        task_id = ask(on_a, {"type": "factorial", "number": 30})["task_id"]
        outcome = next_frame(on_a)
    assert outcome == {"type": "success", "task_id": task_id, "result": math.factorial(30)}

    async def publish_again() -> bool:
        nc = await nats.connect(nats_cluster.urls)
        try:
            job = json.dumps({"id": task_id, "n": 30}).encode()
            ack = await nc.jetstream().publish(
                "skns.tasks.soft", job, headers={"Nats-Msg-Id": task_id}
            )
            return bool(ack.duplicate)
        finally:
            await nc.close()

    assert asyncio.run(publish_again())  # JetStream knew the id: not stored again
    wait_for(lambda: pulled() == before + 1, what="pulled once")
    time.sleep(1.5)
    assert pulled() == before + 1


def test_single_host_mode_never_loads_nats() -> None:
    code = (
        "import sys, skns.config, skns.tasks.server, skns.tasks.service;"
        "assert not any(m == 'nats' or m.startswith('nats.') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
