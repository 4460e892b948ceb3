"""Event handlers: the built-in ones, and loading one named ``module:function``.

A handler is called with one :class:`~skns.executor.events.Event` (``seq``,
``account_id``, ``event_id``, ``payload``, ``attempt``, and ``env``: the
shard's :class:`HandlerEnv`). An ``async def`` handler runs on the shard's
event loop; any other callable runs in the shard's thread pool. Raising means
failure: the event is retried per the retry policy, then recorded as failed.

Delivery is at least once: after a crash an event whose completion was not
yet journaled runs again, so a handler should be idempotent (key its effects
on ``seq`` or the client's ``event_id``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .events import Event

RECORD_FILE = "record.log"


@dataclasses.dataclass(frozen=True)
class HandlerEnv:
    """What a handler may want to know about the shard running it."""

    shard: int
    duration: float  # [executor] duration
    directory: Path  # the shard's state directory (its journal lives there too)


def resolve(spec: str) -> tuple[Callable[[Event], Any], bool]:
    """The handler named ``module:function`` and whether it is async; raises ValueError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler {spec!r} is not 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"handler {spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"handler {spec!r}: {module_name} has no {attr}") from None
    if not callable(obj):
        raise ValueError(f"handler {spec!r} is not callable")
    return obj, inspect.iscoroutinefunction(obj)


async def sleep(event: Event) -> None:
    """The default: pretend to work for ``duration`` seconds."""
    await asyncio.sleep(event.env.duration)


async def noop(event: Event) -> None:
    """Zero-cost handler, for measuring the executor itself."""


# The record file of each shard directory, opened once per process; a forked child
# (the shards are forked) starts with none and its own pid.
_record_fds: dict[Path, int] = {}
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _record_fds.clear()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def _record_fd(directory: Path) -> int:
    fd = _record_fds.get(directory)
    if fd is None:
        fd = os.open(directory / RECORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _record_fds[directory] = fd
    return fd


def write_record(event: Event) -> None:
    """Append a line saying ``event`` ran: ``[seq, account_id, pid, unix time, attempt]``.

    The line goes to ``record.log`` in the shard's directory with one
    ``write(2)``: it reaches the kernel before the completion is journaled, so
    it survives ``kill -9``. The benchmark and the tests check ordering and
    exactly-once from it (see :mod:`skns.executor.checker`).
    """
    line = orjson.dumps(
        [event.seq, event.account_id, _pid, time.time(), event.attempt],
        option=orjson.OPT_APPEND_NEWLINE,
    )
    os.write(_record_fd(event.env.directory), line)


async def record(event: Event) -> None:
    """Sleep ``duration`` (none when 0), then :func:`write_record`."""
    if event.env.duration:
        await asyncio.sleep(event.env.duration)
    write_record(event)


def record_sync(event: Event) -> None:
    """:func:`record` as a plain blocking function (``time.sleep``): runs in a pool thread."""
    if event.env.duration:
        time.sleep(event.env.duration)
    write_record(event)


def read_records(state_dir: Path) -> list[list[Any]]:
    """Every line the record handler wrote under an executor state directory."""
    lines: list[list[Any]] = []
    for path in sorted(state_dir.glob(f"shard-*/{RECORD_FILE}")):
        with path.open("rb") as f:
            lines.extend(orjson.loads(line) for line in f if line.endswith(b"\n"))
    return lines
