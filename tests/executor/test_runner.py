"""The handler call of a shard or a partition owner (runner.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from skns.executor.events import Event
from skns.executor.handlers import HandlerEnv
from skns.executor.runner import Handler
from skns.executor.settings import ExecutorSettings

ANSWERS: list[asyncio.Future[None]] = []


async def answered(event: Event) -> None:
    """Ends when the test sets the future it left in ANSWERS."""
    future = asyncio.get_running_loop().create_future()
    ANSWERS.append(future)
    await future


def test_an_attempt_cancelled_as_the_handler_ends_is_cancelled() -> None:
    # A drain or a fence cancels running attempts; with asyncio.wait_for (3.11) a cancel in
    # the loop turn the handler ended was swallowed and the account went on to its next event.
    spec = f"{__name__}:answered"
    handler = Handler(replace(ExecutorSettings(), handler=spec, handler_timeout=5.0))

    async def scenario() -> None:
        event = Event(1, 1, None, None, HandlerEnv(0, 0.0, Path(".")))
        attempt = asyncio.create_task(handler.attempt(event))
        while not ANSWERS:
            await asyncio.sleep(0)
        ANSWERS.pop().set_result(None)  # the same turn:
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt

    asyncio.run(scenario())


def test_an_attempt_past_the_timeout_fails_with_the_limit_named() -> None:
    spec = f"{__name__}:answered"
    handler = Handler(replace(ExecutorSettings(), handler=spec, handler_timeout=0.05))
    event = Event(1, 1, None, None, HandlerEnv(0, 0.0, Path(".")))
    with pytest.raises(TimeoutError, match=r"more than 0\.05 s"):
        asyncio.run(handler.attempt(event))
    ANSWERS.clear()
