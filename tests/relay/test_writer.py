"""The batch writer over a real WebSocket connection."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from skns.relay.holdtime import HoldTimes
from skns.relay.writer import BatchWriter


async def with_writer(scenario: Any, **options: Any) -> tuple[list[bytes], Any]:
    """Run ``scenario(writer, written)`` against a server that records what it receives."""
    got: list[bytes] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                got.append(message if isinstance(message, bytes) else message.encode())
        except ConnectionClosed:
            pass  # the test cut the connection
        finally:
            done.set()

    written: list[int] = []
    async with (
        serve(handler, "127.0.0.1", 0, compression=None) as server,
        connect(
            f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", proxy=None, compression=None
        ) as ws,
    ):
        writer = BatchWriter(ws, HoldTimes(), lambda n, end: written.append(n), **options)
        result = await scenario(writer, written)
        await ws.close()
        await asyncio.wait_for(done.wait(), 5)
    return got, result


def test_a_lone_frame_goes_out_in_the_next_loop_turn() -> None:
    async def scenario(writer: BatchWriter, written: list[int]) -> list[int]:
        assert writer.add(b'{"id":1}', 0) is False
        assert written == []
        await asyncio.sleep(0)
        return list(written)

    got, written = uvloop.run(with_writer(scenario))
    assert written == [1]
    assert got == [b'{"id":1}']


def test_a_full_batch_is_written_at_once_each_frame_its_own_message() -> None:
    async def scenario(writer: BatchWriter, written: list[int]) -> list[int]:
        results = [writer.add(b'{"id":%d}' % i, 0) for i in range(10)]
        assert results == [False, False, False, True] * 2 + [False, False]
        return list(written)

    # A long max wait, so only the batch size decides here.
    got, written = uvloop.run(with_writer(scenario, batch=4, max_wait_ns=10**12))
    assert written == [4, 4]
    assert got == [b'{"id":%d}' % i for i in range(10)]


def test_hold_times_are_recorded_per_frame() -> None:
    async def scenario(writer: BatchWriter, written: list[int]) -> int:
        for i in range(5):
            writer.add(b'{"id":%d}' % i, 0)
        writer.write()
        return writer.holds.count

    _, count = uvloop.run(with_writer(scenario))
    assert count == 5


def test_frames_after_the_transport_closed_are_counted_lost() -> None:
    async def scenario(writer: BatchWriter, written: list[int]) -> tuple[int, bool]:
        writer.add(b'{"id":1}', 0)
        writer.connection.transport.close()
        writer.write()
        return writer.lost, writer.open

    got, (lost, still_open) = uvloop.run(with_writer(scenario))
    assert lost == 1 and not still_open
    assert got == []
