"""The straightforward design, run by the benchmark for comparison only.

The same protocol and the same digit conversion, but the jobs go through
``concurrent.futures.ProcessPoolExecutor`` with ``loop.run_in_executor`` and
``asyncio.wait_for``: at the limit the client gets its "Timeout error", but the
work goes on, holding a worker (and every job queued behind it) until it ends.
Results are kept in a plain dict (no TTL): it lives only as long as a
benchmark phase.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import sys
import uuid

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import protocol
from .digits import decimal_digits
from .settings import TasksSettings


def _lift_digit_limit() -> None:
    sys.set_int_max_str_digits(0)


def _factorial_digits(number: int) -> bytes:
    return decimal_digits(math.factorial(number))


async def serve_baseline(settings: TasksSettings) -> None:
    """Serve until SIGTERM (the benchmark stops it so)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(15, stop.set)
    pools = {
        queue: concurrent.futures.ProcessPoolExecutor(
            settings.workers(queue), initializer=_lift_digit_limit
        )
        for queue in protocol.QUEUES
    }
    results: dict[str, bytes] = {}
    running: set[asyncio.Task[None]] = set()

    async def compute(ws: ServerConnection, task_id: str, request: protocol.Submit) -> None:
        limit = settings.limit(request.queue)
        job = loop.run_in_executor(pools[request.queue], _factorial_digits, request.number)
        try:
            digits = await asyncio.wait_for(job, limit)
            frame = protocol.success_frame(task_id.encode(), digits)
        except TimeoutError:
            frame = protocol.timeout_frame(task_id, limit)
        results[task_id] = frame
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame, text=True)

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                request = protocol.parse(message, settings.soft_max, settings.max_number)
                if isinstance(request, protocol.Submit):
                    task_id = str(uuid.uuid4())
                    await ws.send(protocol.ack_frame(task_id), text=True)
                    job = asyncio.create_task(compute(ws, task_id, request))
                    running.add(job)
                    job.add_done_callback(running.discard)
                elif isinstance(request, protocol.Fetch):
                    frame = results.get(request.task_id) or protocol.not_found_frame(
                        request.task_id
                    )
                    await ws.send(frame, text=True)
                else:
                    await ws.send(request.frame, text=True)
        except ConnectionClosed:
            pass

    def health(connection: ServerConnection, request: Request) -> Response | None:
        return connection.respond(200, "ok\n") if request.path == "/health" else None

    listen = settings.listen
    try:
        async with serve(
            handler,
            listen.host,
            listen.port,
            process_request=health,
            compression=None,
            max_size=settings.max_request_bytes,
        ):
            await stop.wait()
    finally:
        for pool in pools.values():
            # A job still running past its limit is exactly what this design cannot stop:
            # kill its processes behind the executor's back, or the benchmark waits for it.
            processes = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()


def run_baseline(settings: TasksSettings) -> int:
    import uvloop

    uvloop.run(serve_baseline(settings))
    return 0
