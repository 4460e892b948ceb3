"""Handlers the executor tests load by name (``executor.exec_handlers:...``) in forked shards."""

from __future__ import annotations

import asyncio
import threading
import time

from skns import jsonexact
from skns.executor.events import Event
from skns.executor.handlers import record_sync, write_record


def sync_record(event: Event) -> None:
    """A blocking handler: must run in the shard's thread pool, never on its loop."""
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("sync handler ran on the event loop thread")
    record_sync(event)


async def flaky(event: Event) -> None:
    """Fails the first ``payload["fail"]`` attempts, then records the event."""
    if event.attempt <= event.payload.get("fail", 0):
        raise ValueError(f"attempt {event.attempt} of {event.seq} fails on purpose")
    write_record(event)


async def slow(event: Event) -> None:
    """Sleeps ``payload["sleep"]`` seconds, then records the event."""
    await asyncio.sleep(event.payload["sleep"])
    write_record(event)


def slow_sync(event: Event) -> None:
    """The same, blocking a pool thread."""
    time.sleep(event.payload["sleep"])
    write_record(event)


PAYLOADS = "payloads.log"


async def payload_record(event: Event) -> None:
    """Appends ``[seq, payload]``, written exactly, to payloads.log in the shard directory."""
    with (event.env.directory / PAYLOADS).open("ab") as f:
        f.write(jsonexact.dumps([event.seq, event.payload]) + b"\n")
    write_record(event)
