"""What aiohttp logs about malformed HTTP requests, once per reason, rate-limited.

aiohttp logs every request it cannot parse (a bad request line, a header too
long, a broken chunked body...) as an ERROR with its traceback: nine lines per
request, 3,000 of them in one attack, burying everything else in the journal.
Such a request is the client's fault and already answered with 400. This
filter, on the logger the replica hands to aiohttp, turns each into one
WARNING line without traceback, the first of each reason at once and then at
most one per ``interval`` seconds per reason, saying how many it left out.
Anything else (a fault of ours) passes unchanged, traceback and all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..ratelimit import RateGate


class BadRequestFilter(logging.Filter):
    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self._gate = RateGate(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            # A body that does not decode, met again when aiohttp reads on past the answer
            # (its "lingering"): the client's error too, if a parse error caused it.
            exc = exc.__cause__
        if not isinstance(exc, HttpProcessingError):
            return True
        reason = type(exc).__name__  # a closed set: the gate's dict stays small
        left_out = self._gate.allow(reason)
        if left_out is None:
            return False
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        detail = (exc.message or "").splitlines()[0][:200] if exc.message else ""
        record.msg = "bad HTTP request from %s: %s %s (400)%s"
        record.args = (
            peer,
            reason,
            detail,
            f"; {left_out} more of these in the last {self.interval:g} s" if left_out else "",
        )
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        record.exc_info = None
        record.exc_text = None
        return True


def http_logger() -> logging.Logger:
    """The logger for aiohttp's server side, with the filter on (one per process)."""
    logger = logging.getLogger("skns.messenger.http")
    if not any(isinstance(f, BadRequestFilter) for f in logger.filters):
        logger.addFilter(BadRequestFilter())
    return logger
