"""Helpers of the executor tests: real processes (forked via skns.child.enter) and a client."""

from __future__ import annotations

from typing import Any

import orjson
from websockets.sync.client import ClientConnection, connect

from helpers import wait_for
from skns import jsonexact
from skns.config import Settings
from skns.executor.handlers import read_records
from skns.executor.launch import Family


class Executor:
    """A running router + shards and what a test needs to talk to them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.family = Family(settings)
        self.port = settings.executor.listen.port
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.state = settings.service.state_dir / "executor"

    def connect(self, **options: Any) -> ClientConnection:
        return connect(self.url, compression=None, max_size=None, open_timeout=10, **options)

    def records(self) -> list[list[Any]]:
        return read_records(self.state)

    def wait_done(self, count: int, timeout: float = 30.0) -> list[list[Any]]:
        """Until the record handler has written ``count`` distinct events."""
        return wait_for(
            lambda: (r := self.records()) and len({line[0] for line in r}) >= count and r,
            timeout,
            f"{count} events to finish",
        )

    def shard_stats(self) -> list[dict[str, Any]]:
        stats = self.family.stats()
        return [stats.get(f"executor-shard {i}", {}) for i in range(self.family.shards)]


def send(ws: ClientConnection, message: Any) -> dict[str, Any]:
    """Send one frame, return its answer."""
    ws.send(message if isinstance(message, bytes | str) else jsonexact.dumps(message))
    return orjson.loads(ws.recv(timeout=20))


def send_events(
    ws: ClientConnection, accounts: list[Any], batch: int = 50, start: int = 0
) -> dict[int, Any]:
    """Send one event per entry of ``accounts`` in batches; returns acked seq -> account."""
    acked: dict[int, Any] = {}
    for i in range(0, len(accounts), batch):
        chunk = accounts[i : i + batch]
        frame = [
            {"account_id": a, "event_id": start + i + j, "payload": {}} for j, a in enumerate(chunk)
        ]
        answer = send(ws, frame)
        assert "ack" in answer, answer
        acked.update(zip(answer["ack"], chunk, strict=True))
    return acked
