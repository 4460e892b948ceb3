"""The router's shard connection against a stand-in shard on a real unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from skns.executor import ipc
from skns.executor.link import Chunk, ShardLink


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_acks_release_chunks_and_a_reconnect_resends_the_rest(tmp_path: Path) -> None:
    received: list[list[Any]] = []
    connections: list[asyncio.StreamWriter] = []
    acked: list[Chunk] = []
    held: list[int] = []
    links: list[bool] = []  # connected, each time the link came or went

    async def shard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.write(ipc.ack_frame(0))  # the hello: holds nothing yet
        decoder = ipc.FrameDecoder()
        while data := await reader.read(65536):
            received.extend(orjson.loads(body) for body in decoder.feed(data))

    async def main() -> None:
        path = tmp_path / "shard.sock"
        server = await asyncio.start_unix_server(shard, str(path))
        link = ShardLink(
            0, str(path), acked.append, held.append, lambda: links.append(link.connected)
        )
        keeper = asyncio.create_task(link.keep_connected())
        try:
            await until(lambda: link.connected)
            link.add([1, "a", None, None], "frame-1")
            link.add([2, "b", None, None], "frame-1")
            link.flush()  # one chunk: seqs 1-2
            link.add([3, "a", None, None], "frame-2")
            link.flush()  # another: seq 3
            await until(lambda: len(received) == 2)
            assert received == [
                [[1, "a", None, None], [2, "b", None, None]],
                [[3, "a", None, None]],
            ]
            assert link.backlog == 3
            connections[-1].write(ipc.ack_frame(2))  # durable up to seq 2
            await until(lambda: acked)
            assert [(c.high, c.count, c.answers) for c in acked] == [(2, 2, [["frame-1", 2]])]
            assert link.backlog == 1
            connections[-1].close()  # the shard "restarts"
            await until(lambda: len(connections) == 2 and len(received) == 3)
            assert received[-1] == [[3, "a", None, None]]  # only the unacked chunk again
            assert held == [0, 2, 0]
            assert links == [True, False, True]  # the router publishes its stats on each
        finally:
            keeper.cancel()
            link.close()
            server.close()

    asyncio.run(main())


def test_garbage_from_the_shard_drops_the_connection(tmp_path: Path) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def shard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.write(ipc.frame(b"not an ack"))
        await reader.read()

    async def main() -> None:
        path = tmp_path / "shard.sock"
        server = await asyncio.start_unix_server(shard, str(path))
        link = ShardLink(0, str(path), lambda chunk: None, lambda seq: None)
        keeper = asyncio.create_task(link.keep_connected())
        try:
            await until(lambda: len(connections) >= 2)  # dropped, then connected again
        finally:
            keeper.cancel()
            link.close()
            server.close()

    asyncio.run(main())
