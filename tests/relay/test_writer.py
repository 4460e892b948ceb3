"""The batch writer over a real WebSocket connection."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from skns.relay.holdtime import HoldTimes
from skns.relay.writer import BatchWriter, SinkConnection


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
            f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}",
            proxy=None,
            compression=None,
            create_connection=SinkConnection,
        ) as ws,
    ):
        writer = BatchWriter(ws, HoldTimes(), lambda n, size, end: written.append(n), **options)
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
        result = list(written)
        writer.write()  # the rest, before the close (as the relay does)
        return result

    # A long max wait, so only the batch size decides here.
    got, written = uvloop.run(with_writer(scenario, batch=4, max_wait_ns=10**12))
    assert written == [4, 4]
    assert got == [b'{"id":%d}' % i for i in range(10)]


def test_a_batch_is_written_once_it_holds_batch_bytes() -> None:
    # Large frames: the relay checks the socket after each batch, so a batch of 32
    # large frames would land far past the socket's high-water mark.
    frames = [b'{"id":%d,"pad":"%s"}' % (i, b"x" * 1000) for i in range(5)]

    async def scenario(writer: BatchWriter, written: list[int]) -> list[bool]:
        results = [writer.add(frame, 0) for frame in frames]
        writer.write()
        return results

    got, results = uvloop.run(with_writer(scenario, batch_bytes=2000, max_wait_ns=10**12))
    assert results == [False, True, False, True, False]
    assert got == frames


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


def test_the_ledger_counts_every_byte_of_the_stream_control_frames_too() -> None:
    async def scenario(writer: BatchWriter, written: list[int]) -> tuple[int, int | None]:
        writer.add(b'{"id":1}', 0)
        # websockets writes a ping of its own while our frame waits: it must
        # neither carry our frame nor shift the ledger's offsets.
        await writer.connection.ping(b"four")
        for i in range(2, 100):
            writer.add(b'{"id":%d}' % i, 0)
        writer.write()
        await asyncio.sleep(0.1)  # loopback acknowledges within this
        ledger = writer.connection.ledger
        return ledger.out, writer._acked()

    got, (out, acked) = uvloop.run(with_writer(scenario))
    assert got == [b'{"id":%d}' % i for i in range(1, 100)]
    assert acked == out  # upgrade request + ping + 99 frames, byte for byte


def test_after_a_clean_close_nothing_is_unconfirmed() -> None:
    async def scenario(writer: BatchWriter, written: list[int]) -> BatchWriter:
        for i in range(500):
            writer.add(b'{"id":%d}' % i, 0)
        writer.write()
        return writer

    got, writer = uvloop.run(with_writer(scenario))
    assert len(got) == 500
    # Every byte written, the close frame too, and the SYN and the FIN.
    assert writer.connection.acked_at_loss == writer.connection.ledger.out + 2
    assert writer.unconfirmed() == 0
