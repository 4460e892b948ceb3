"""Malformed HTTP requests are logged once per reason, rate-limited, without traceback."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadStatusLine, LineTooLong

from skns.messenger.httplog import BadRequestFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(exc: BaseException | None) -> logging.LogRecord:
    """What aiohttp's RequestHandler.handle_error logs."""
    return logging.LogRecord(
        "skns.messenger.http",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (type(exc), exc, None) if exc is not None else None,
    )


def test_one_line_per_reason_then_one_per_interval_saying_how_many_were_left_out() -> None:
    clock = Clock()
    f = BadRequestFilter(interval=60, clock=clock)
    passed = []
    for _ in range(1000):
        for r in (record(BadStatusLine("GARBAGE")), record(LineTooLong("line", "8190"))):
            if f.filter(r):
                passed.append(r)
    assert len(passed) == 2  # the first of each reason
    first = passed[0]
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert "BadStatusLine" in first.getMessage() and "127.0.0.1" in first.getMessage()
    clock.now += 61
    again = record(BadStatusLine("GARBAGE"))
    assert f.filter(again)
    assert "999 more of these in the last 60 s" in again.getMessage()
    assert not f.filter(record(BadStatusLine("GARBAGE")))


def test_other_errors_pass_whole() -> None:
    f = BadRequestFilter(clock=Clock())
    for _ in range(3):
        r = record(RuntimeError("a bug of ours"))
        assert f.filter(r)
        assert r.levelno == logging.ERROR and r.exc_info is not None
    plain = record(None)
    assert f.filter(plain) and plain.getMessage() == "Error handling request from 127.0.0.1"
