"""The relay against the simulator, over real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

import orjson
import psutil
import pytest
import uvloop
from websockets.asyncio.server import serve

from skns import jsonexact
from skns.relay.oneshot import format_report, report
from skns.relay.relay import Backoff, Relay
from skns.relay.sim import Simulator, Source, SourcePlan

TIMEOUT = 30  # seconds any one relay run may take


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return uvloop.run(asyncio.wait_for(coro, TIMEOUT))


def relay_for(sim: Simulator, count: int, **options: Any) -> Relay:
    options.setdefault("first_id", 0)
    options.setdefault("reconnect_backoff_ms", 10)
    return Relay(sim.source_url, sim.sink_url("test"), count=count, **options)


async def relay_all(source: Source, count: int, **options: Any) -> tuple[Relay, dict[str, Any]]:
    """Run a relay against a simulator until ``count`` are sent; return it and the sink report."""
    async with Simulator(source) as sim:
        relay = relay_for(sim, count, **options)
        await relay.run(asyncio.Event())
        return relay, sim.sink("test").report()


def test_twenty_thousand_shuffled_delayed_messages_arrive_in_order_none_missing() -> None:
    plan = SourcePlan(count=20_000, window=50, late=0.02, delay="exp", delay_ms=0.5, seed=4)
    relay, sink = run(relay_all(Source(plan.frames()), 20_000))
    assert sink["complete"], sink
    assert sink["in_order"] and sink["missing"] == 0 and sink["duplicates"] == 0
    assert sink["received"] == 20_000  # nothing sent twice
    assert relay.sent == 20_000 and relay.buffer.skipped == 0
    assert relay.holds.count == 20_000
    assert relay.sink_close_code == 1000 and relay.sink_drops == 0
    stats = relay.stats()
    assert stats["buffered"] == 0 and stats["outbox"] == 0
    assert stats["hold"]["min_us"] <= stats["hold"]["p50_us"] <= stats["hold"]["max_us"]


def test_source_dropping_the_connection_mid_stream_is_survived_without_resending() -> None:
    plan = SourcePlan(count=10_000, window=30, late=0.01, delay_ms=0.2, seed=5)
    # Every source connection is cut after 2,500 frames; the next one repeats 300.
    source = Source(plan.frames(), drop_after=2_500, replay=300)
    relay, sink = run(relay_all(source, 10_000))
    assert source.connections >= 4
    assert relay.source_connects == source.connections
    assert sink["complete"] and sink["in_order"], sink
    assert sink["received"] == 10_000 and sink["duplicates"] == 0
    # The repeated frames were recognised, not forwarded.
    repeated = relay.dropped["duplicate"] + relay.dropped["below_sent"]
    assert repeated == relay.received - 10_000 > 0


def script(*frames: bytes | dict[str, Any]) -> list[tuple[float, float, int | None, bytes]]:
    """A source script sending ``frames`` at once, in this order."""
    out: list[tuple[float, float, int | None, bytes]] = []
    for frame in frames:
        if isinstance(frame, dict):
            id_ = frame.get("id")
            out.append((0.0, 0.0, id_ if type(id_) is int else None, orjson.dumps(frame)))
        else:
            out.append((0.0, 0.0, None, frame))
    return out


def test_each_bad_input_is_dropped_and_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="skns.relay")
    source = Source(
        script(
            {"id": 1, "text": 1},
            b"not json",
            {"id": 0, "text": 0},
            b'{"id": -1, "text": 2}',  # below the first id (bytes: not expected)
            b"[1, 2, 3]",
            {"text": 5},
            {"id": True, "text": 5},
            {"id": 2.0, "text": 5},
            {"id": "3", "text": 5},
            {"id": 1, "text": 1},  # already sent
            {"id": 3, "text": 3},
            {"id": 3, "text": 3},  # already held
            b"\xff\xfe",
            b'{"id": 4, "text": 4, "id": 2}',  # ordered by 2, read as 4 by a sink
            {"id": 2, "text": 2},
        )
    )
    relay, sink = run(relay_all(source, 4))
    assert sink["complete"] and sink["in_order"], sink
    assert sink["received"] == 4 and sink["not_messages"] == 0
    assert relay.dropped == {
        "not_json": 2,
        "not_object": 1,
        "missing_id": 1,
        "bad_id": 3,
        "repeated_id": 1,
        "duplicate": 1,
        "below_sent": 1,
        "below_start": 1,
    }
    assert relay.received == 15 and relay.sent == 4
    # Each malformed kind logged (at most one line per kind every 10 s), with the frame.
    assert (
        'dropped 1 source frame(s): repeated_id (latest: b\'{"id": 4, "text": 4, "id": 2}\')'
        in (caplog.text)
    )
    for reason in ("not_json", "not_object", "missing_id", "bad_id"):
        assert f"dropped 1 source frame(s): {reason}" in caplog.text
    assert "duplicate" not in caplog.text  # not malformed: a source may well repeat itself


def test_the_frames_reach_the_sink_byte_for_byte() -> None:
    frames = [{"id": i, "text": i * 7, "note": "é"} for i in (2, 0, 1)]

    async def go() -> list[bytes] | None:
        async with Simulator(Source(script(*frames)), record=True) as sim:
            await relay_for(sim, 3).run(asyncio.Event())
            return sim.sink("test").frames

    assert run(go()) == [orjson.dumps(f) for f in sorted(frames, key=lambda f: f["id"])]


def test_gap_timeout_skips_dropped_ids_and_keeps_the_rest_in_order() -> None:
    plan = SourcePlan(count=3_000, window=20, drops=0.01, late=0.0, seed=6)
    source = Source(plan.frames())

    async def go() -> tuple[Relay, dict[str, Any]]:
        async with Simulator(source) as sim:
            relay = Relay(sim.source_url, sim.sink_url("test"), first_id=0, gap_timeout_ms=20)
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            # Until every frame was read and everything released was written.
            while not (
                relay.received == len(source.script)
                and len(relay.buffer) == 0
                and relay.sent == relay.buffer.released
            ):
                await asyncio.sleep(0.01)
            stop.set()
            await task
            return relay, sim.sink("test").report()

    relay, sink = run(go())
    assert sink["in_order"] and sink["duplicates"] == 0, sink
    assert relay.buffer.skips >= 1
    # Every id the source sent reached the sink, unless it came after its gap was
    # skipped (possible only if the machine stalls the relay for 20 ms): then it
    # was dropped as below-sent, never sent out of order.
    late = relay.dropped["below_sent"]
    expected = len(source.expected)
    assert sink["distinct"] == sink["received"] == relay.sent == expected - late
    # Skipped: every id below the last one sent that was not sent.
    assert relay.buffer.skipped == max(source.expected) + 1 - expected + late


def test_first_id_is_learned_from_the_lowest_id_while_settling() -> None:
    plan = SourcePlan(count=2_000, start=1_000, window=40, late=0.0, seed=7)
    relay, sink = run(relay_all(Source(plan.frames()), 2_000, first_id=None, settle_ms=100))
    assert sink["complete"] and sink["in_order"], sink
    assert relay.buffer.next_id == 3_000


def test_sink_dropping_the_connection_means_at_most_once_never_out_of_order() -> None:
    # Paced, so that the sink cuts connections while the stream is still flowing.
    plan = SourcePlan(count=6_000, window=10, late=0.0, rate=20_000, seed=8)

    async def go() -> tuple[Relay, dict[str, Any]]:
        async with Simulator(Source(plan.frames()), sink_drop_after=4_000) as sim:
            relay = relay_for(sim, 6_000)
            await relay.run(asyncio.Event())
            return relay, sim.sink("test").report()

    relay, sink = run(go())
    # The sink cuts the first connection after 4,000 frames; the second, if the
    # relay had not yet written all 6,000 to the first, gets the rest.
    assert relay.sink_connects == sink["connections"] in (1, 2)
    assert relay.sink_drops == 1
    assert sink["in_order"] and sink["duplicates"] == 0, sink
    # What the sink got is what was sent, less frames lost with a cut connection.
    assert relay.sent == 6_000
    assert sink["received"] + sink["missing"] == 6_000
    # sink_unconfirmed is bounded on both sides only where the sink's buffers are known (the
    # raw-socket test below): this sink drops what its kernel acknowledged but it had not read,
    # and its kernel delays acks (a reset carries none). Here: within what was sent.
    assert 0 <= relay.sink_unconfirmed <= relay.sent


def test_stats_name_every_figure_status_shows() -> None:
    relay = Relay("ws://127.0.0.1:1/raw-messages", "ws://127.0.0.1:1/ordered-messages/x")
    stats = relay.stats()
    assert set(stats) >= {
        "source",
        "sink",
        "received",
        "sent",
        "buffered",
        "held_bytes",
        "buffer_limit_bytes",
        "source_pauses",
        "skipped",
        "skips_full",
        "dropped",
        "hold",
        "run_s",
        "first_id",
        "first_id_learned",
        "problems",
    }
    assert set(stats["dropped"]) >= {"below_sent", "below_start", "outlier", "repeated_id"}
    assert set(stats["hold"]) == {"count", "min_us", "p50_us", "p99_us", "max_us", "mean_us"}
    orjson.dumps(stats)  # publishable as is


def test_servers_that_come_up_late_are_reached_by_retrying() -> None:
    with socket.socket() as probe:  # a free port, for a simulator that starts later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = SourcePlan(count=1_000, window=10, late=0.0, seed=9)

    async def go() -> tuple[Relay, dict[str, Any]]:
        relay = Relay(
            f"ws://127.0.0.1:{port}/raw-messages",
            f"ws://127.0.0.1:{port}/ordered-messages/test",
            first_id=0,
            count=1_000,
            reconnect_backoff_ms=20,
            reconnect_backoff_max_ms=100,
        )
        task = asyncio.create_task(relay.run(asyncio.Event()))
        await asyncio.sleep(0.3)  # a few refused attempts
        assert relay.sink_connects == 0 and not task.done()
        async with Simulator(Source(plan.frames()), port=port) as sim:
            await task
            return relay, sim.sink("test").report()

    relay, sink = run(go())
    assert sink["complete"] and sink["in_order"], sink
    assert relay.sink_connects == relay.source_connects == 1


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


def test_count_stops_at_exactly_count_messages_mid_stream() -> None:
    # A flood of 20,000 in runs of up to 40 ids: without the cut, whole runs and
    # batches past the count reached the sink (up to 5,225 more than asked for).
    plan = SourcePlan(count=20_000, window=40, late=0.01, delay_ms=0.5, seed=10)

    async def go() -> tuple[Relay, list[bytes] | None]:
        async with Simulator(Source(plan.frames()), record=True) as sim:
            relay = relay_for(sim, 5_000)
            await relay.run(asyncio.Event())
            return relay, sim.sink("test").frames

    relay, frames = run(go())
    assert frames is not None
    assert [orjson.loads(f)["id"] for f in frames] == list(range(5_000))
    assert relay.sent == 5_000 and relay.sink_close_code == 1000
    assert relay.holds.count == 5_000
    text = format_report(report(relay))
    assert "OK: all 5000 messages sent in order, and no more" in text


def test_ids_past_64_bits_are_ordered_exactly_and_shown_exactly() -> None:
    # orjson would read these as one float, 1.8446744073709552e+19: all "equal".
    base = 2**64
    frames = [b'{"id":%d,"text":%d}' % (base + i, i) for i in (2, 0, 3, 1)]

    async def go() -> tuple[Relay, list[bytes] | None]:
        async with Simulator(Source(script(*frames)), record=True) as sim:
            relay = relay_for(sim, 4, first_id=base)
            await relay.run(asyncio.Event())
            return relay, sim.sink("test").frames

    relay, got = run(go())
    assert got == sorted(frames, key=lambda f: jsonexact.loads(f)["id"])
    assert relay.dropped["bad_id"] == 0
    # Status carries the next id exact, past what orjson can write.
    assert jsonexact.loads(jsonexact.dumps(relay.stats()))["next_id"] == base + 4


def test_a_stray_id_before_the_stream_is_dropped_as_an_outlier_not_a_stall() -> None:
    # {"id": -5} then 0..4999 shuffled: the relay started at -5 and waited for -4.
    plan = SourcePlan(count=5_000, window=20, late=0.0, seed=11)
    stray = (0.0, 0.0, None, b'{"id":-5,"text":0}')
    relay, sink = run(
        relay_all(Source([stray, *plan.frames()]), 5_000, first_id=None, settle_ms=50)
    )
    assert sink["complete"] and sink["in_order"] and sink["received"] == 5_000, sink
    assert relay.buffer.start == 0 and relay.stats()["dropped"]["outlier"] == 1
    assert report(relay)["ok"]


def test_a_first_id_later_than_settle_is_reported_plainly() -> None:
    frames = [(0.0, 0.0, i, b'{"id":%d,"text":0}' % i) for i in range(1, 1_000)]
    frames.append((0.3, 0.0, 0, b'{"id":0,"text":0}'))  # 300 ms after the first
    frames += [(0.5, 0.0, i, b'{"id":%d,"text":0}' % i) for i in range(1_000, 2_000)]
    relay, _ = run(relay_all(Source(frames), 1_999, first_id=None, settle_ms=100))
    assert relay.sent == 1_999 and relay.dropped["below_start"] == 1
    stats = report(relay)
    assert not stats["ok"]
    assert any(
        "below the first id 1 arrived after it was learned" in p and "--first-id 0" in p
        for p in stats["problems"]
    ), stats["problems"]
    assert "FAILED" in format_report(stats)


def read_upgrade(conn: socket.socket) -> tuple[bytes, bytes]:
    """A WebSocket client's upgrade request, and what came after it."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    head, rest = request.split(b"\r\n\r\n", 1)
    return head, rest


def upgrade_answer(request: bytes) -> bytes:
    key = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.I).group(1)  # type: ignore[union-attr]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


class RawSink:
    """A WebSocket sink on raw sockets, served on a thread by ``_serve``."""

    def __init__(self, rcvbuf: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listener.getsockname()[1]}/ordered-messages/raw"

    def _serve(self) -> None:
        raise NotImplementedError


class SlowAbortingSink(RawSink):
    """A real, slow WebSocket sink on a thread: reads ``chunk`` bytes a millisecond, then resets.

    After ``abort_after`` frames it stops reading for ``stall`` s, then closes
    with SO_LINGER 0: a TCP reset, and whatever sat in its small receive buffer
    is gone. Raw sockets, so that what
    it read and what it held unread are known to the byte.
    """

    def __init__(
        self, abort_after: int, stall: float = 0.3, rcvbuf: int = 8192, chunk: int = 2048
    ) -> None:
        self.abort_after = abort_after
        self.stall = stall
        self.chunk = chunk
        self.frames = 0  # whole frames read
        self.rcvbuf = 0  # what the kernel made of it, on the accepted socket
        super().__init__(rcvbuf)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.rcvbuf = conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        request, buffer = read_upgrade(conn)
        conn.sendall(upgrade_answer(request))
        while self.frames < self.abort_after:
            while len(buffer) >= 2:  # count the whole (masked, short) frames
                size = 2 + 4 + (buffer[1] & 0x7F)
                if len(buffer) < size:
                    break
                buffer = buffer[size:]
                self.frames += 1
            time.sleep(0.001)
            buffer += conn.recv(self.chunk)
        time.sleep(self.stall)  # reads no more: the relay fills its buffers
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.listener.close()


def test_a_sink_reset_behind_a_slow_sink_counts_what_never_reached_it() -> None:
    # Messages written into socket buffers count as sent; when the sink reset,
    # the relay reported them all as delivered (sink_drops=0, none lost).
    plan = SourcePlan(count=20_000, window=1, late=0.0, seed=12)
    frames = plan.frames()
    sink = SlowAbortingSink(abort_after=3_000)

    async def go() -> Relay:
        async with Simulator(Source(frames)) as sim:
            relay = Relay(sim.source_url, sink.url, first_id=0, reconnect_backoff_ms=10)
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            while not relay.sink_drops:  # the reset, noticed
                await asyncio.sleep(0.01)
            stop.set()
            await task
            return relay

    relay = run(go())
    sink.thread.join(5)
    assert relay.sink_drops == 1 and relay.sent > 3_000
    unconfirmed = relay.sink_unconfirmed
    at_least = relay.sent - unconfirmed  # acknowledged by the sink's TCP
    # What its host acknowledged the sink read, but for what its buffers held unread when it
    # reset (its receive buffer and one chunk).
    shortest = min(len(payload) for *_, payload in frames) + 6  # + header and mask
    assert at_least <= sink.frames + (sink.rcvbuf + sink.chunk) // shortest + 1
    assert unconfirmed >= relay.sent - sink.frames - (sink.rcvbuf + sink.chunk) // shortest - 1
    assert unconfirmed > 0
    assert relay.stats()["sink_unconfirmed"] == unconfirmed
    assert any(
        f"{unconfirmed} were never acknowledged" in p and f"at least {at_least} reached" in p
        for p in relay.problems()
    ), relay.problems()


class StalledSink(RawSink):
    """A real WebSocket sink on a thread that reads nothing until told, then reads it all.

    Raw sockets with a small receive buffer, so that what the relay holds is not
    hidden in the sink's kernel buffers. It answers the upgrade once ``go`` is set
    (so that the relay's memory can be measured before any message), reads no
    frame until ``read`` is set, then collects every frame's id, in order, and
    answers the relay's close.
    """

    def __init__(self) -> None:
        self.asked = threading.Event()  # the relay sent its upgrade request
        self.go = threading.Event()
        self.read = threading.Event()
        self.ids: list[int] = []
        self.closed = False  # the relay's close frame came, and was answered
        super().__init__(65536)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        request, _ = read_upgrade(conn)  # the relay sends nothing more before the answer
        self.asked.set()
        self.go.wait(30)
        conn.sendall(upgrade_answer(request))
        self.read.wait(30)
        buffer = bytearray()
        while not self.closed:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 2:  # whole masked frames, any length
                opcode, size, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
                if size >= 126:
                    start = 4 if size == 126 else 10
                    if len(buffer) < start:
                        break
                    size = int.from_bytes(buffer[2:start], "big")
                if len(buffer) < start + 4 + size:
                    break
                mask = buffer[start : start + 4]
                head = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[start + 4 : start + 44]))
                del buffer[: start + 4 + size]
                if opcode == 0x8:  # close: answer it (1000), as a sink does
                    conn.sendall(b"\x88\x02\x03\xe8")
                    self.closed = True
                    break
                self.ids.append(int(re.match(rb'\{"id":(\d+),', head).group(1)))  # type: ignore[union-attr]
        conn.close()
        self.listener.close()


def test_a_sink_that_stops_reading_bounds_the_relays_memory_and_loses_nothing() -> None:
    # The relay read up to 1,024 frames of up to 1 MiB while the sink was backed up:
    # ~1 GiB. Now what it holds stays under buffer_limit_bytes; the source is not read.
    count, limit = 96, 8 * 2**20
    frames = [b'{"id":%d,"text":%d,"pad":"%s"}' % (i, i, b"x" * 1_000_000) for i in range(count)]
    sent = 0

    async def source(ws: Any) -> None:
        nonlocal sent
        for frame in frames:
            await ws.send(frame, text=True)
            sent += 1
        await ws.wait_closed()

    async def go() -> tuple[int, int, int, int, dict[str, Any]]:
        sink = StalledSink()
        async with serve(source, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            relay = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "skns.relay", "--json", "--idle-timeout", "30"],
                *["--source", f"ws://127.0.0.1:{port}/raw-messages", "--sink", sink.url],
                *["--count", str(count), "--first-id", "0"],
                *["--buffer-limit-bytes", str(limit)],
                stdout=asyncio.subprocess.PIPE,
            )
            process = psutil.Process(relay.pid)
            while not sink.asked.is_set():  # started, connected, nothing read yet
                await asyncio.sleep(0.02)
            before = process.memory_info().rss
            sink.go.set()
            # The sink reads nothing: until the source is held back for 0.5 s (or 5 s).
            peak, last, still = before, -1, time.monotonic()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and time.monotonic() - still < 0.5:
                peak = max(peak, process.memory_info().rss)
                if sent != last:
                    last, still = sent, time.monotonic()
                await asyncio.sleep(0.02)
            held_back = sent
            sink.read.set()
            out, _ = await relay.communicate()
        sink.thread.join(10)
        assert sink.ids == list(range(count)), sink.ids[:20]  # every one, in order
        return before, peak, held_back, relay.returncode or 0, orjson.loads(out)

    before, peak, held_back, code, report_ = run(go())
    grew = (peak - before) / 2**20
    # Kernel buffers hold some frames too; the relay read the rest of the 96 MiB before.
    assert held_back < count * 0.6, (held_back, grew)
    # The limit, websockets' queue (a quarter of it), a frame in hand, one batch in the
    # socket's buffer, and the allocator's slack.
    assert grew < 8 + 2 + 12, (grew, held_back)
    assert code == 0 and report_["ok"], report_
    assert report_["sent"] == count
    print(f"grew {grew:.1f} MiB, source held back after {held_back} of {count}")
    assert report_["held_bytes"] == 0  # the count of what is held returns to nothing


def test_a_sink_that_is_down_holds_the_source_back_not_the_relays_memory() -> None:
    # While the sink was down, the relay kept reading the source into its outbox,
    # without bound. Now it reads no further than buffer_limit_bytes, then waits.
    count, first, limit = 48, 4, 4 * 2**20
    frames = [b'{"id":%d,"text":%d,"pad":"%s"}' % (i, i, b"x" * 1_000_000) for i in range(count)]
    sent = 0
    sink_down = asyncio.Event()
    got: list[int] = []

    async def source(ws: Any) -> None:
        nonlocal sent
        for n, frame in enumerate(frames):
            if n == first:  # the first ones are all read; then the sink goes down
                await sink_down.wait()
            await ws.send(frame, text=True)
            sent += 1
        await ws.wait_closed()

    async def sink(ws: Any) -> None:
        async for message in ws:
            got.append(orjson.loads(message)["id"])
            if len(got) == first:  # all it was sent so far: nothing in flight is lost
                await ws.close()

    async def go() -> tuple[Relay, int, int]:
        async with serve(source, "127.0.0.1", 0, compression=None) as source_server:
            sink_server = await serve(sink, "127.0.0.1", 0, compression=None, max_size=None)
            port = sink_server.sockets[0].getsockname()[1]
            relay = Relay(
                f"ws://127.0.0.1:{source_server.sockets[0].getsockname()[1]}/raw-messages",
                f"ws://127.0.0.1:{port}/ordered-messages/down",
                first_id=0,
                count=count,
                buffer_limit_bytes=limit,
                reconnect_backoff_ms=10,
                reconnect_backoff_max_ms=50,
            )
            task = asyncio.create_task(relay.run(asyncio.Event()))
            while len(got) < first:
                await asyncio.sleep(0.01)
            sink_server.close()  # down: connections refused
            await sink_server.wait_closed()
            sink_down.set()
            most, last, still = 0, -1, time.monotonic()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and time.monotonic() - still < 0.5:
                most = max(most, relay.stats()["held_bytes"])
                if sent != last:
                    last, still = sent, time.monotonic()
                await asyncio.sleep(0.01)
            held_back = sent
            async with serve(sink, "127.0.0.1", port, compression=None, max_size=None):
                await task
        return relay, most, held_back

    relay, most, held_back = run(go())
    assert held_back < count * 0.6, (held_back, most)
    assert 0 < most <= limit + len(frames[0]), most
    assert got == list(range(count))  # every one, in order, once
    assert relay.source_pauses > 0 and relay.sink_connects == 2
    assert relay.stats()["held_bytes"] == 0


def test_waiting_forever_for_a_missing_id_is_bounded_in_bytes_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gap_timeout_ms 0 and id 0 never comes: the reorder buffer held up to
    # buffer_limit (1,000,000) frames of up to 1 MiB. Now buffer_limit_bytes bounds it.
    pad = b"x" * 200_000
    frames = [b'{"id":%d,"text":0,"pad":"%s"}' % (i, pad) for i in range(1, 21)]
    caplog.set_level(logging.WARNING, logger="skns.relay")
    source = Source(script(*frames))
    relay, sink = run(relay_all(source, 16, buffer_limit_bytes=2**20))
    assert sink["in_order"] and sink["received"] == 16, sink
    # Id 0 was skipped when the sixth frame took the buffer past 1 MiB; the rest came in order.
    assert relay.buffer.skipped == 1 and relay.buffer.overflows == relay.buffer.skips == 1
    stats = relay.stats()
    assert stats["skips_full"] == 1 and stats["held_bytes"] == 0
    assert any("reorder buffer was full 1 time(s)" in p for p in relay.problems())
    assert "reorder buffer full (buffer_limit 1000000 messages, buffer_limit_bytes 1048576)" in (
        caplog.text
    )
