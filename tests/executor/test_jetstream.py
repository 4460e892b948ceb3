"""The executor's JetStream names and this host's instance id (no NATS needed)."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import orjson
import pytest
from nats.js.errors import APIError

from skns.executor import jetstream


def test_subjects_and_keys() -> None:
    assert jetstream.subject(5) == "skns.exec.5"
    assert jetstream.key(5) == "p5"
    assert jetstream.holder_host("a/1/123") == "a"
    assert jetstream.holder_host(None) is None


def test_the_instance_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = jetstream.instance_id(tmp_path / "executor")
    assert len(first) == 32
    assert jetstream.instance_id(tmp_path / "executor") == first
    assert jetstream.instance_id(tmp_path / "other") != first  # another state dir: another host


def test_processes_starting_at_once_agree_on_one_instance_id(tmp_path: Path) -> None:
    found: list[str] = []
    threads = [
        threading.Thread(target=lambda: found.append(jetstream.instance_id(tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1
    assert sorted(os.listdir(tmp_path)) == ["instance"]  # no temporary file left


def _get_answer(data: bytes, hdrs: bytes = b"") -> bytes:
    message = {"subject": "$KV.skns_exec_leases.p3", "seq": 9, "time": "2026-12-01T00:00:00Z"}
    message["data"] = base64.b64encode(data).decode()
    if hdrs:
        message["hdrs"] = base64.b64encode(hdrs).decode()
    return orjson.dumps(
        {"type": "io.nats.jetstream.api.v1.stream_msg_get_response", "message": message}
    )


def test_a_value_is_read_from_a_message_get_answer() -> None:
    assert jetstream.kv_value(_get_answer(b"a/1/123")) == b"a/1/123"
    stored = b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 4\r\n\r\n"
    assert jetstream.kv_value(_get_answer(b"b/0/7", stored)) == b"b/0/7"


def test_no_message_or_a_delete_marker_is_no_value() -> None:
    missing = {"error": {"code": 404, "err_code": 10037, "description": "no message found"}}
    assert jetstream.kv_value(orjson.dumps(missing)) is None
    deleted = b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n"
    assert jetstream.kv_value(_get_answer(b"", deleted)) is None


@pytest.mark.parametrize("answer", [b"not json", b"[1]", b'{"message": 3}', b"{}"])
def test_another_error_answer_or_no_answer_raises(answer: bytes) -> None:
    down = {"error": {"code": 503, "description": "JetStream system temporarily unavailable"}}
    with pytest.raises(APIError):
        jetstream.kv_value(orjson.dumps(down))
    with pytest.raises(APIError):
        jetstream.kv_value(answer)
