"""The task protocol: requests parsed into values, answers built as JSON text.

Pure logic, no I/O. Requests (text or binary frames holding one JSON object):

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

import json
from dataclasses import dataclass
from typing import Any

import orjson

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
_BAD_JSON = refuse(DECODE_ERROR, detail="not valid JSON")
_MISSING = object()


def parse(message: str | bytes, soft_max: int, max_number: int) -> Request:
    """Classify one request frame; never raises on bad input."""
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        # orjson also refuses integers beyond a double's range: they are valid JSON.
        try:
            obj = _strict_loads(message)
        except (ValueError, RecursionError):  # RecursionError: nesting orjson refused too
            return _BAD_JSON
    if type(obj) is not dict:
        return _NOT_AN_OBJECT
    kind = obj.get("type")
    if kind == "factorial":
        number = obj.get("number", _MISSING)
        if type(number) is int and 0 <= number <= max_number:
            return Submit(number, SOFT if number <= soft_max else HARD)
        return _number_error(message, number, max_number)
    if kind == "result":
        task_id = obj.get("task_id")
        if type(task_id) is str:
            return Fetch(task_id)
        return refuse(INVALID_TASK_ID, detail="task_id must be a string")
    detail = "missing type" if kind is None else f"unknown type {orjson.dumps(kind).decode()}"
    return refuse(UNKNOWN_TASK, detail=f'{detail}; expected "factorial" or "result"')


class _BigInt(str):
    """An integer literal too long to be worth converting: its text."""


def _parse_int(text: str) -> int | _BigInt:
    return int(text) if len(text) <= 24 else _BigInt(text)


def _not_json(text: str) -> None:
    raise ValueError(f"{text} is not JSON")


def _strict_loads(message: str | bytes) -> Any:
    """The stdlib parser, for the rare requests orjson's answer is not enough for.

    It keeps long integer literals as text (no huge int is built, no digit
    limit is hit) and refuses NaN and Infinity, which are not JSON.
    """
    return json.loads(message, parse_int=_parse_int, parse_constant=_not_json)


def _number_error(message: str | bytes, number: object, max_number: int) -> Refusal:
    expected = f"number must be an integer from 0 to {max_number}"
    if number is _MISSING:
        return refuse(INVALID_NUMBER, detail=f"missing number; {expected}")
    if type(number) is float:
        # orjson turns integers beyond 64 bits into floats: look at the literal again.
        number = _strict_loads(message).get("number")
    if type(number) is _BigInt:
        if number.startswith("-"):
            return refuse(INVALID_NUMBER, detail=f"{expected}, got a negative integer")
        return refuse(
            NUMBER_TOO_LARGE,
            detail=f"{expected}, got an integer of {len(number)} digits",
            max_number=max_number,
        )
    if type(number) is int:
        if number < 0:
            return refuse(INVALID_NUMBER, detail=f"{expected}, got {number}")
        return refuse(NUMBER_TOO_LARGE, detail=f"{expected}, got {number}", max_number=max_number)
    kind = {bool: "a boolean", float: "a float", str: "a string", type(None): "null"}.get(
        type(number), f"a JSON {'array' if type(number) is list else 'object'}"
    )
    return refuse(INVALID_NUMBER, detail=f"{expected}, got {kind}")
