"""The router over a real WebSocket: answers, bad input, health, back-pressure."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from helpers import admitted, assert_refuses_plain_http, assert_too_many, wait_for
from skns.executor import records
from skns.executor.checker import verify

from .exec_support import send

BAD_FRAMES = [
    (b"{not json", "not JSON"),
    ("plain text", "not JSON"),
    ({"payload": 1}, "missing account_id"),
    ({"account_id": True}, "account_id must be an integer or a string"),
    ({"account_id": 2.5}, "account_id must be an integer or a string"),
    ({"account_id": {"id": 1}}, "account_id must be an integer or a string"),
    ({"account_id": None}, "account_id must be an integer or a string"),
    ([], "empty batch"),
    ([{"account_id": 1}, {"account_id": []}], "account_id must be an integer or a string"),
    # orjson reads it, but could not write it on to a shard: every later flush failed.
    (
        b'{"account_id": 1, "payload": ' + b"[" * 300 + b"]" * 300 + b"}",
        "nested deeper than 200 levels",
    ),
]


def test_single_and_batch_acks_in_frame_order(executor: Any) -> None:
    ex = executor()
    with ex.connect() as ws:
        first = send(ws, {"account_id": 1, "payload": "x"})
        assert set(first) == {"ack"} and isinstance(first["ack"], int)
        batch = send(ws, [{"account_id": i} for i in range(30)])
        assert batch["ack"] == list(range(first["ack"] + 1, first["ack"] + 31))
        # Pipelined frames over both shards are answered in the order they were sent.
        for i in range(20):
            ws.send(orjson.dumps({"account_id": f"acct-{i}"}))
        answers = [orjson.loads(ws.recv(timeout=10))["ack"] for _ in range(20)]
        assert answers == sorted(answers)
    ex.wait_done(51)


def test_bad_frames_get_an_error_and_the_connection_stays(executor: Any) -> None:
    ex = executor()
    acked: dict[int, str] = {}
    with ex.connect() as ws:
        for i, (frame, reason) in enumerate(BAD_FRAMES):
            acked[send(ws, {"account_id": "good", "event_id": i})["ack"]] = "good"
            answer = send(ws, frame)
            assert answer["error"] == reason, frame
            if isinstance(frame, list) and frame:
                assert answer["index"] == 1  # the bad event of the batch
        # A text frame that is not UTF-8 is no JSON either (and does not close the connection).
        ws.send(b'{"account_id": "\xff"}', text=True)
        assert orjson.loads(ws.recv(timeout=10)) == {"error": "not JSON"}
        # Still the same connection, still served.
        acked[send(ws, {"account_id": "good", "event_id": "last"})["ack"]] = "good"
    runs = ex.wait_done(len(acked))
    verdict = verify(acked, runs)  # nothing of a bad frame ran (not even a batch's good part)
    assert verdict.ok, verdict.summary()
    rejected = wait_for(
        lambda: (
            sum(ex.family.router().get("rejected", {}).values()) == len(BAD_FRAMES) + 1
            and ex.family.router()["rejected"]
        ),
        5,
        "rejected counters",
    )
    assert rejected["not JSON"] == 3
    assert rejected["bad event in batch"] == 1


def test_oversized_frame_is_refused_not_fatal(executor: Any) -> None:
    ex = executor(max_frame_bytes=1024)
    with ex.connect() as ws:
        big = {"account_id": 1, "payload": "x" * 5000}
        assert send(ws, big) == {"error": "frame exceeds 1024 bytes"}
        # The limit counts bytes, also in a text frame: 600 characters of 2 bytes each.
        ws.send('{"account_id": 1, "payload": "' + "é" * 600 + '"}')
        assert orjson.loads(ws.recv(timeout=10)) == {"error": "frame exceeds 1024 bytes"}
        assert "ack" in send(ws, {"account_id": 1, "payload": "small"})
    ex.wait_done(1)
    assert ex.records()[0][1] == 1
    assert len(ex.records()) == 1
    rejected = wait_for(  # in the router's stats, published every 0.5 s
        lambda: ex.family.router().get("rejected"),
        5,
        "both refusals in the stats",
        until=lambda r: r and sum(r.values()) >= 2,
    )
    assert rejected == {"frame exceeds 1024 bytes": 2}


def test_health(executor: Any) -> None:
    ex = executor()
    with urllib.request.urlopen(f"http://127.0.0.1:{ex.port}/health", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        body = orjson.loads(response.read())
    assert body["status"] == "ok"
    assert body["shards"] == body["shards_connected"] == 2
    assert_refuses_plain_http(ex.port)  # anything but /health and a handshake: a clear no
    # With a shard down the router still answers, and says so.
    ex.family.kill("executor-shard 1")
    wait_for(lambda: _health_status(ex.port) == 503, 10, "health to report the lost shard")


def test_past_max_connections_a_handshake_gets_503_and_the_others_go_on(executor: Any) -> None:
    ex = executor(max_connections=2)
    with ex.connect() as one, ex.connect() as two:
        assert_too_many(ex.url, 2)
        assert set(send(one, {"account_id": 1})) == {"ack"}
        assert set(send(two, {"account_id": 2})) == {"ack"}
        assert _health_status(ex.port) == 200  # a monitor still gets through
        wait_for(lambda: ex.family.router().get("refused_connections") == 1, 10, "refusal in stats")
        assert ex.family.router()["max_connections"] == 2
        assert not admitted(ex.url)
        two.close()
        # Its slot is free again (once the router saw the TCP connection end).
        wait_for(lambda: admitted(ex.url), 10, "a slot to free")
    ex.wait_done(2)


def _health_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_back_pressure_slows_acks_and_bounds_memory(executor: Any) -> None:
    ex = executor(duration=0.02, max_backlog=40, max_unacked=60)
    accounts = [i % 20 for i in range(1200)]  # 60 per account: ~1.2 s of work each
    frames = [
        orjson.dumps([{"account_id": a} for a in accounts[i : i + 10]])
        for i in range(0, len(accounts), 10)
    ]
    acked: dict[int, int] = {}
    with ex.connect() as ws:

        def receive() -> None:
            for i in range(len(frames)):
                answer = orjson.loads(ws.recv(timeout=30))
                acked.update(zip(answer["ack"], accounts[i * 10 : i * 10 + 10], strict=True))

        receiver = threading.Thread(target=receive)
        receiver.start()
        sender = threading.Thread(target=lambda: [ws.send(f) for f in frames])
        sender.start()
        samples = []
        while receiver.is_alive():
            stats = ex.family.stats()
            samples.append((len(acked), stats))
            time.sleep(0.05)
        receiver.join()
        sender.join(5)
    # While shards were behind, acks lagged well behind what was sent ...
    assert min(n for n, _ in samples[len(samples) // 4 :]) < len(accounts) - 200
    # ... and neither the router nor a shard held more than its limits (plus one frame).
    for _, stats in samples:
        router = stats.get("executor-router 0", {})
        assert router.get("in_flight", 0) <= 60 + 10
        for i in range(2):
            assert stats.get(f"executor-shard {i}", {}).get("backlog", 0) <= 40 + 60 + 10
    assert any(s.get(f"executor-shard {i}", {}).get("paused") for _, s in samples for i in (0, 1))
    verdict = verify(acked, ex.wait_done(len(accounts)))
    assert verdict.ok, verdict.summary()


def test_stops_promptly_while_holding_clients_back(executor: Any) -> None:
    ex = executor(duration=5.0, max_backlog=5, max_unacked=10, drain_timeout=0.2)
    # The router is gone when the client closes: no close frame comes back, so the client's
    # close would wait out its close_timeout (10 s by default) for nothing.
    with ex.connect(close_timeout=0.5) as ws:
        sender = threading.Thread(
            target=lambda: [ws.send(orjson.dumps({"account_id": i})) for i in range(200)],
            daemon=True,
        )
        sender.start()
        wait_for(lambda: ex.family.router().get("in_flight", 0) >= 10, 10, "back-pressure")
        start = time.monotonic()
        ex.family.stop(timeout=10)
        assert time.monotonic() - start < 5.0  # SIGTERM was enough: nothing hung


def test_warns_of_journals_beyond_the_shard_count(
    executor: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    orphan = tmp_path / "state" / "executor" / "shard-5"
    orphan.mkdir(parents=True)
    (orphan / "journal-000000000001.log").write_bytes(
        records.high_record(3) + records.record(records.ACCEPTED, b"[[3, 1, null, null]]")
    )
    executor()
    assert "belongs to shard 5 but shards = 2" in capfd.readouterr().err


def test_a_graceful_stop_sends_the_acks_that_are_due_first(executor: Any) -> None:
    ex = executor()
    acked: set[int] = set()
    with ex.connect() as ws:

        def flood() -> None:
            with contextlib.suppress(ConnectionClosed):
                for i in range(5000):  # far more than runs before the stop below
                    ws.send(orjson.dumps([{"account_id": (i * 20 + j) % 97} for j in range(20)]))

        def collect() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    acked.update(orjson.loads(ws.recv(timeout=30))["ack"])

        threads = [threading.Thread(target=f, daemon=True) for f in (flood, collect)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acked) > 2000, 20, "a stream of acks")
        ex.family.stop()
        for thread in threads:
            thread.join(10)
    # Whatever a shard journaled runs, now or after the restart; a client resends what it
    # saw no ack for, so each of those runs must have been acked.
    again = executor()
    wait_for(
        lambda: (s := again.shard_stats()) and all(x and not x["backlog"] for x in s),
        20,
        "the journals replayed",
    )
    ran = {line[0] for line in again.records()}
    assert ran >= acked
    assert ran - acked == set(), f"{len(ran - acked)} events ran without an ack"
