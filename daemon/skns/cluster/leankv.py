"""A key-value bucket whose updates go over the lean connection (:mod:`skns.cluster.lean`).

A shard's commits (every ``commit_interval`` s per busy partition) and lease renewals
(``lease_ttl / 6``) are a key-value update each: a publish with the expected last
revision and its JetStream ack. Through nats-py each was a ``Msg``, a future, a timer
and headers built and parsed per call (py-spy: a sixth of a busy shard's CPU). Same
semantics and errors as nats-py's ``KeyValue.update`` (a wrong revision raises
``KeyWrongLastSequenceError``, what the lease's fencing and the commits' compare-and-set
rely on). A ``create`` is such an update expecting no message on the key (revision 0);
only when the key has one does it go to nats-py's ``create``, which tells a live value
(the same error) from a delete marker (written over). ``get``, rare, stays on nats-py.
"""

from __future__ import annotations

from typing import Any

import orjson
from nats.errors import ConnectionClosedError
from nats.js.errors import APIError, KeyWrongLastSequenceError, NoStreamResponseError

from .lean import Lean, NotConnected

WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's error codes of a failed compare-and-set


class LeanKV:
    def __init__(self, lean: Lean, kv: Any, bucket: str, timeout: float) -> None:
        self.lean = lean
        self.kv = kv  # nats-py's bucket, for the rest
        self.prefix = f"$KV.{bucket}."
        self.timeout = timeout

    async def create(self, key: str, value: bytes) -> int:
        """Write ``value`` if ``key`` has no live value; the new revision. (Every partition's
        first commit on a new cluster, and every lease taken: nats-py's create is its
        update, a ``Msg`` and a future, and the email package for the answer's headers.)"""
        try:
            return await self.update(key, value, last=0)
        except KeyWrongLastSequenceError:
            return int(await self.kv.create(key, value))  # a live value, or a marker over it

    async def get(self, key: str) -> Any:
        return await self.kv.get(key)

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Write ``value`` if ``key``'s last revision is ``last``; the new revision."""
        headers = b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: %d\r\n\r\n" % last
        try:
            status, data = await self.lean.request(self.prefix + key, value, headers, self.timeout)
        except NotConnected as exc:
            raise ConnectionClosedError from exc
        return revision(status, data)


def revision(status: str, data: bytes) -> int:
    """The stream sequence of a key-value update's JetStream ack."""
    seq = api_answer(status, data).get("seq")
    if type(seq) is not int:
        raise APIError(description=f"not a JetStream ack: {data[:200]!r}")
    return seq


def api_answer(status: str, data: bytes) -> dict[str, Any]:
    """A JetStream API answer or publish ack read with orjson; raises nats-py's errors for
    an error answer (``KeyWrongLastSequenceError`` for a wrong expected revision) or no
    responders (status 503)."""
    if status == "503":
        raise NoStreamResponseError
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise APIError(description=f"not a JetStream answer: {data[:200]!r}") from None
    if not isinstance(answer, dict):
        raise APIError(description=f"not a JetStream answer: {data[:200]!r}")
    error = answer.get("error")
    if isinstance(error, dict):
        if error.get("err_code") in WRONG_LAST_SEQUENCE:
            raise KeyWrongLastSequenceError(description=error.get("description"))
        try:
            APIError.from_error(error)  # raises the error's class
        except KeyError:
            raise APIError(description=str(error)) from None
    return answer
