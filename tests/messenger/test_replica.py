"""Replica processes when PostgreSQL goes away mid-load and comes back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp
import orjson
import pytest
import uvloop

import pg
from skns.messenger.local import LocalReplicas
from skns.messenger.pgcluster import Cluster
from skns.messenger.replica import stored_rows
from skns.messenger.rules import Answer, Message, check

from .httpclient import post, request


@pytest.fixture
def cluster(pg_server: pg.PgServer) -> Iterator[Cluster]:
    """The session's throwaway server, for a test that stops it; running again afterwards."""
    if pg_server.cluster is None:
        pytest.skip("needs the throwaway cluster (cannot stop $SKNS_TEST_PG_DSN's server)")
    yield pg_server.cluster
    if pg_server.cluster.postmaster_pid is None:
        pg_server.cluster.start()  # leave it running for the other tests


def test_database_stopped_mid_load(
    pg_server: pg.PgServer, cluster: Cluster, start_replicas: Callable[..., LocalReplicas]
) -> None:
    dsn = pg_server.database()
    replicas = start_replicas(dsn=dsn, db_timeout=1.0, reconnect_timeout=2.0)
    statuses: Counter[int | str] = Counter()
    answers: list[Answer] = []
    failed: set[str] = set()
    phases: dict[str, Counter[int | str]] = {}

    async def run() -> None:
        stop = asyncio.Event()
        async with aiohttp.ClientSession(trust_env=False) as session:

            async def client(c: int) -> None:
                i = 0
                while not stop.is_set():
                    url = replicas.urls[(c + i) % len(replicas.urls)] + "/messages"
                    text = f"{c}.{i}"
                    i += 1
                    try:
                        async with session.post(
                            url,
                            json={"sender": f"s{c % 4}", "text": text},
                            timeout=aiohttp.ClientTimeout(total=10),
                        ) as response:
                            body = await response.json()
                            statuses[response.status] += 1
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        statuses[type(exc).__name__] += 1
                        failed.add(text)
                        continue
                    if response.status == 200:
                        messages = tuple(Message.from_json(m) for m in body["messages"])
                        answers.append(Answer(f"s{c % 4}", text, messages))
                    else:
                        assert response.status == 503, body
                        assert "not stored" in body["error"]
                        failed.add(text)
                    await asyncio.sleep(0.01)

            async def wait_for(status: int, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                seen = statuses[status]
                while statuses[status] < seen + 5:
                    assert time.monotonic() < deadline, f"no {status} in {timeout} s: {statuses}"
                    await asyncio.sleep(0.05)

            clients = [asyncio.ensure_future(client(c)) for c in range(8)]
            loop = asyncio.get_running_loop()
            await wait_for(200, 10)
            phases["before"] = Counter(statuses)
            await loop.run_in_executor(None, cluster.stop)
            await wait_for(503, 15)
            phases["down"] = Counter(statuses)
            await loop.run_in_executor(None, cluster.start)
            await wait_for(200, 20)  # the replicas recover by themselves
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*clients)

    uvloop.run(run())
    assert phases["before"][200] > 0 and phases["down"][503] >= 5
    assert statuses[200] > phases["down"][200] + 5

    table = [Message.from_row(r) for r in asyncio.run(stored_rows(replicas.settings))]
    verdict = check(answers, table)
    assert verdict.ok, {r: verdict.examples[r] for r in verdict.broken()}  # every 200 stored
    stored = {m.text for m in table}
    # No partial rows, nothing unknown: every row is a complete message some client
    # sent; one refused with 503 may be stored only if the server died after its
    # COMMIT but before answering, which cannot be more than the batches in flight.
    assert stored <= {a.text for a in answers} | failed
    assert len(stored & failed) <= 8
    # Both replicas serve again.
    for url in replicas.urls:
        assert post(url, {"sender": "after", "text": url})[0] == 200


def test_503_comes_at_once_while_the_database_is_down_and_service_recovers(
    pg_server: pg.PgServer, cluster: Cluster, start_replicas: Callable[..., LocalReplicas]
) -> None:
    db_timeout = 3.0
    replicas = start_replicas(
        dsn=pg_server.database(), replicas=1, db_timeout=db_timeout, reconnect_timeout=2.0
    )
    (url,) = replicas.urls
    assert post(url, {"sender": "ann", "text": "before"})[0] == 200

    def timed(call: Callable[..., tuple], *args: object) -> tuple[float, tuple]:
        started = time.monotonic()
        result = call(*args)
        return time.monotonic() - started, result

    cluster.stop("immediate")  # like a crash: no goodbye to the clients
    # The first request learns it (the pool may wait up to db_timeout) ...
    took, (status, _) = timed(post, url, {"sender": "ann", "text": "first"})
    assert status == 503 and took < db_timeout + 2
    # ... and from then on POST and /healthz answer 503 at once, with a JSON body.
    slowest = 0.0
    for i in range(20):
        took, (status, body) = timed(post, url, {"sender": "ann", "text": str(i)})
        assert status == 503 and "not stored" in body["error"], body
        slowest = max(slowest, took)
        took, (status, ctype, body) = timed(request, url + "/healthz", "GET")
        assert status == 503 and ctype.startswith("application/json"), body
        assert "database down" in body["error"]
        slowest = max(slowest, took)
    assert slowest < 0.5, f"a 503 took {slowest:.2f} s (db_timeout is {db_timeout} s)"
    deadline = time.monotonic() + 5  # status shows it (stats are published every 0.5 s)
    while not orjson.loads(replicas.stats()[0] or b"{}").get("database_down"):
        assert time.monotonic() < deadline, replicas.stats()
        time.sleep(0.1)
    cluster.start()
    # Back without a restart of the replica, within a few seconds.
    started = time.monotonic()
    while post(url, {"sender": "ann", "text": "after"})[0] != 200:
        assert time.monotonic() - started < 10, "the replica did not reconnect in 10 s"
        time.sleep(0.1)
    assert request(url + "/healthz", "GET")[0] == 200
