import asyncio
import threading
from pathlib import Path

import pytest

from skns.executor import handlers
from skns.executor.events import Event
from skns.executor.handlers import HandlerEnv, resolve


def test_resolve_async_and_sync() -> None:
    fn, is_async = resolve("skns.executor.handlers:sleep")
    assert fn is handlers.sleep and is_async
    fn, is_async = resolve("skns.executor.handlers:write_record")
    assert fn is handlers.write_record and not is_async


@pytest.mark.parametrize(
    "spec",
    ["nocolon", "skns.executor.handlers:nothing", "no.such.module:f", "skns.executor:RECORD"],
)
def test_resolve_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        resolve(spec)


def test_sleep_takes_duration() -> None:
    env = HandlerEnv(0, 0.05, Path("."))

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await handlers.sleep(Event(1, 1, None, None, env))
        return loop.time() - start

    assert 0.04 <= asyncio.run(timed()) < 1.0


def test_record_lines(tmp_path: Path) -> None:
    shard_dir = tmp_path / "shard-0"
    shard_dir.mkdir()
    env = HandlerEnv(0, 0.0, shard_dir)
    asyncio.run(handlers.record(Event(7, "acct", "e", None, env)))
    worker = threading.Thread(target=handlers.write_record, args=(Event(8, 3, None, None, env),))
    worker.start()
    worker.join()
    lines = handlers.read_records(tmp_path)
    assert [(line[0], line[1]) for line in lines] == [(7, "acct"), (8, 3)]
