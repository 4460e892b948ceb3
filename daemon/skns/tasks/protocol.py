"""The task protocol: requests parsed into values, answers built as JSON text.

Pure logic, no I/O. Requests are text frames, or binary frames holding UTF-8, of one JSON
object; anything else (UTF-16 or UTF-32 too) is a ``JSON decode error``. They are read with
:mod:`skns.jsonexact`: an integer of any size arrives exact, so a number past 64 bits is
refused as too large, never read as a float. Requests:

* ``{"type": "factorial", "number": N}`` submits a job; answered at once with
  ``{"type": "result", "task_id": ID}``, later followed by
  ``{"type": "success", "task_id": ID, "result": N!}`` (or a ``Timeout error``).
* ``{"type": "result", "task_id": ID}`` fetches a task by id, from any connection:
  the stored final frame (``success`` or the error), or for a task still queued
  or running ``{"type": "pending", "task_id": ID, "status": "queued"|"running"}``,
  after which the final frame is pushed to this connection too.

Every request gets exactly one immediate answer, in request order, so a client
can pair a refusal with the request that caused it. Error frames keep the
original shape ``{"type": "error", "result": REASON}``; a ``detail`` field says
what was wrong and ``task_id`` names the task where there is one.

Results are JSON numbers of any size: their decimal digits are spliced into the
frame as text, because orjson refuses integers beyond 64 bits.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from .. import jsonexact

# The reasons of the original task statement ...
DECODE_ERROR = "JSON decode error"
TIMEOUT_ERROR = "Timeout error"
UNKNOWN_TASK = "Unknown task"
# ... and the ones added for what it left open.
INVALID_NUMBER = "Invalid number"
NUMBER_TOO_LARGE = "Number too large"
INVALID_TASK_ID = "Invalid task id"
TASK_NOT_FOUND = "Task not found"
TASK_FAILED = "Task failed"
SERVER_BUSY = "Server busy"

SOFT = "soft"
HARD = "hard"
QUEUES = (SOFT, HARD)


@dataclass(frozen=True, slots=True)
class Submit:
    """``{"type": "factorial", "number": N}``, already checked."""

    number: int
    queue: str


@dataclass(frozen=True, slots=True)
class Fetch:
    """``{"type": "result", "task_id": ID}``."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered with an error frame and nothing else."""

    reason: str
    frame: bytes


def refuse(reason: str, **fields: Any) -> Refusal:
    return Refusal(reason, error_frame(reason, **fields))


Request = Submit | Fetch | Refusal


def error_frame(reason: str, **fields: Any) -> bytes:
    """``{"type": "error", "result": reason, ...fields}`` as JSON bytes."""
    return orjson.dumps({"type": "error", "result": reason, **fields})


def ack_frame(task_id: str) -> bytes:
    """The immediate answer to a submission (the id is ours: no escaping needed)."""
    return b'{"type":"result","task_id":"' + task_id.encode() + b'"}'


def success_frame(task_id: bytes, digits: bytes) -> bytes:
    """The result frame; ``digits`` is the decimal text of the result, of any length."""
    return b'{"type":"success","task_id":"' + task_id + b'","result":' + digits + b"}"


def pending_frame(task_id: str, status: str) -> bytes:
    """The answer to fetching a task that is still queued or running."""
    return b'{"type":"pending","task_id":"%s","status":"%s"}' % (task_id.encode(), status.encode())


def timeout_frame(task_id: str, limit: float) -> bytes:
    return error_frame(
        TIMEOUT_ERROR, task_id=task_id, detail=f"computation exceeded its {limit:g} s limit"
    )


def failed_frame(task_id: str, detail: str) -> bytes:
    return error_frame(TASK_FAILED, task_id=task_id, detail=detail)


def not_found_frame(task_id: str) -> bytes:
    return error_frame(
        TASK_NOT_FOUND, task_id=task_id, detail="no such task, or its result has expired"
    )


_NOT_AN_OBJECT = refuse(DECODE_ERROR, detail="expected a JSON object")
_MISSING = object()


def _digit_limit() -> int:
    """The longest integer literal the stdlib parser converts now (Python's int/str digit
    limit, which a process may change at any time); jsonexact refuses a longer one."""
    return sys.get_int_max_str_digits() or sys.int_info.default_max_str_digits


def parse(message: str | bytes, soft_max: int, max_number: int) -> Request:
    """Classify one request frame (text, or binary holding UTF-8); never raises on bad input."""
    try:
        obj = jsonexact.loads(message)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        return _decode_error(message, max_number, error)
    if type(obj) is not dict:
        return _NOT_AN_OBJECT
    kind = obj.get("type")
    if kind == "factorial":
        number = obj.get("number", _MISSING)
        if type(number) is int and 0 <= number <= max_number:
            return Submit(number, SOFT if number <= soft_max else HARD)
        return _number_error(number, max_number)
    if kind == "result":
        task_id = obj.get("task_id")
        if type(task_id) is str:
            return Fetch(task_id)
        return refuse(INVALID_TASK_ID, detail="task_id must be a string")
    detail = "missing type" if kind is None else f"unknown type {orjson.dumps(kind).decode()}"
    return refuse(UNKNOWN_TASK, detail=f'{detail}; expected "factorial" or "result"')


def _decode_error(message: str | bytes, max_number: int, error: Exception) -> Refusal:
    """A request jsonexact refused: not strict UTF-8 JSON, or an integer too long to read.

    Only ``number`` can meaningfully hold such an integer, and no number of thousands of
    digits is within ``max_number``: it is refused as too large, not as bad JSON.
    """
    raw = message.encode(errors="replace") if isinstance(message, str) else message
    limit = _digit_limit()
    long = re.search(rb"-?[0-9]{%d}" % (limit + 1), raw)  # re caches the compiled pattern
    if long is None:
        return refuse(DECODE_ERROR, detail=f"not valid JSON: {str(error)[:200]}")
    detail = f"{_expected(max_number)}, got an integer of more than {limit} digits"
    if long.group().startswith(b"-"):
        return refuse(INVALID_NUMBER, detail=detail.replace("got an", "got a negative"))
    return refuse(NUMBER_TOO_LARGE, detail=detail, max_number=max_number)


def _describe(number: int) -> str:
    """The integer itself, or for a long one its sign and length (keeps the frame small)."""
    text = str(number)
    if len(text) <= 40:
        return text
    sign = "a negative" if number < 0 else "an"
    return f"{sign} integer of {len(text.lstrip('-'))} digits"


def _expected(max_number: int) -> str:
    return f"number must be an integer from 0 to {max_number}"


def _number_error(number: object, max_number: int) -> Refusal:
    expected = _expected(max_number)
    if number is _MISSING:
        return refuse(INVALID_NUMBER, detail=f"missing number; {expected}")
    if type(number) is int:  # exact, whatever its size (jsonexact)
        got = _describe(number)
        if number < 0:
            return refuse(INVALID_NUMBER, detail=f"{expected}, got {got}")
        return refuse(NUMBER_TOO_LARGE, detail=f"{expected}, got {got}", max_number=max_number)
    kind = {bool: "a boolean", float: "a float", str: "a string", type(None): "null"}.get(
        type(number), f"a JSON {'array' if type(number) is list else 'object'}"
    )
    return refuse(INVALID_NUMBER, detail=f"{expected}, got {kind}")
