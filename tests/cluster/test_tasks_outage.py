"""The task server in cluster mode when JetStream refuses or is gone: a full stream,
and the whole NATS cluster down then back. A cluster of its own (this module's)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from helpers import wait_for
from skns.cluster.natscluster import NatsCluster
from skns.tasks.local import LocalServer, healthy, local_settings

LONG_JOB = 400_000  # a hard job past its 1 s limit: holds the one hard worker for 1 s


@pytest.fixture
def make_host(nats_cluster: NatsCluster, tmp_path: Path) -> Iterator[Callable[..., LocalServer]]:
    """Hosts of one cluster; the last one started sets the streams' limit (max_queued)."""
    started: list[LocalServer] = []

    def make(**tasks: Any) -> LocalServer:
        table = {"nats": nats_cluster.urls, "name": "solo", "replicas": 3, "publish_timeout": 1.0}
        settings = local_settings(
            tmp_path / f"host{len(started)}",
            cluster=table,
            **{"hard_limit": 1.0, "hard_workers": 1, "soft_workers": 1, **tasks},
        )
        host = LocalServer(settings)
        started.append(host)
        host.start()
        return host

    yield make
    for host in started:
        host.__exit__(None, None, None)


def submit(url: str, number: int) -> dict:
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "factorial", "number": number}))
        return json.loads(ws.recv(timeout=30))


def test_a_full_stream_refuses_with_server_busy(make_host: Callable[..., LocalServer]) -> None:
    host = make_host(max_queued=2)
    with connect(host.url, open_timeout=10) as ws:
        for _ in range(3):  # one running (held, not acked yet), one waiting: the stream is full
            ws.send(json.dumps({"type": "factorial", "number": LONG_JOB}))
        answers = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
        assert [a["type"] for a in answers[:2]] == ["result", "result"]
        assert answers[2]["type"] == "error" and answers[2]["result"] == "Server busy"
        assert "queue is full" in answers[2]["detail"]
        outcomes = [json.loads(ws.recv(timeout=30)) for _ in range(2)]  # the two accepted
    assert {o["result"] for o in outcomes} == {"Timeout error"}


def test_nats_down_is_server_busy_and_503_then_it_works_again(
    make_host: Callable[..., LocalServer], nats_cluster: NatsCluster
) -> None:
    host = make_host()
    for i in range(3):
        nats_cluster.kill(i)
    try:
        wait_for(lambda: not healthy(host.health_url), what="503 while NATS is down")
        started = time.monotonic()
        answer = submit(host.url, 5)
        assert answer["type"] == "error" and answer["result"] == "Server busy"
        # At once, not after publish_timeout (1 s): nothing waits in a client-side buffer
        # to be published after the reconnect.
        assert time.monotonic() - started < 0.9
    finally:
        for i in range(3):
            nats_cluster.restart(i)
    nats_cluster.wait_ready()
    wait_for(lambda: healthy(host.health_url), timeout=30, what="200 once NATS is back")

    last: list[dict[str, Any]] = []

    def works() -> bool:  # the streams' leaders are elected again a moment after the meta leader
        with connect(host.url, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "factorial", "number": 5}))
            last[:] = [json.loads(ws.recv(timeout=30))]
            if last[0]["type"] != "result":
                return False
            return json.loads(ws.recv(timeout=30))["result"] == 120  # pulled and run again

    # Generous: after every node's kill -9, each stream elects its leader again on a loaded box.
    try:
        wait_for(works, timeout=60, what="a job accepted and run again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last answer: {last}") from None
    # Every accepted job was run (jobs refused while a publish went unanswered may have been
    # stored all the same: they run too, their outcome under an id no client was given).
    wait_for(
        lambda: host.stats()["cluster"]["stored"] >= host.stats()["cluster"]["published"],
        what="every accepted job stored",
    )


def test_the_job_of_a_host_killed_9_runs_on_another(
    make_host: Callable[..., LocalServer],
) -> None:
    # ack_wait = hard_limit x hard_prefetch + 10 s: JetStream gives the job to A 13 s after B
    # took it; A runs it to its limit (3 s) and pushes the outcome to the fetch made on A.
    b = make_host(hard_limit=3.0)
    with connect(b.url, open_timeout=10) as on_b:
        on_b.send(json.dumps({"type": "factorial", "number": LONG_JOB}))
        task_id = json.loads(on_b.recv(timeout=30))["task_id"]
        wait_for(lambda: b.stats().get("cluster", {}).get("held") == 1, what="held by b")
        a = make_host(hard_limit=3.0)
        os.kill(b.pid, signal.SIGKILL)  # its workers die with it (PR_SET_PDEATHSIG)
    started = time.monotonic()
    with connect(a.url, open_timeout=10) as on_a:
        on_a.send(json.dumps({"type": "result", "task_id": task_id}))
        assert json.loads(on_a.recv(timeout=30))["type"] == "pending"
        outcome = json.loads(on_a.recv(timeout=60))
    assert outcome["task_id"] == task_id and outcome["result"] == "Timeout error"
    assert time.monotonic() - started < 45
