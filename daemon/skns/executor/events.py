"""Events: what a client sends, how it is checked, and what a handler gets.

A client frame is one JSON object ``{"account_id": int|str, "payload": any,
"event_id"?: any}`` or a JSON array of such objects (a batch). A frame is taken
whole or not at all: one bad event rejects its batch, with the reason and the
index of the event, and nothing of that frame is accepted. A frame nested deeper
than ``MAX_DEPTH`` levels is refused whole.
"""

from __future__ import annotations

from typing import Any

from .. import jsonexact
from ..errors import ProtocolError
from .ring import Account

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
MAX_ACCOUNT_CHARS = 1024
# Levels of arrays and objects in a frame, a batch's array included; jsonexact.WRITE_DEPTH
# (254) less this is what wrapping an event to pass it on may add.
MAX_DEPTH = 200


class BadEvent(ProtocolError):
    """A frame from a client is not an event or a batch of events."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        self.reason = reason
        self.index = index
        super().__init__(reason if index is None else f"event {index}: {reason}")

    def answer(self) -> dict[str, Any]:
        """The error frame sent back to the client."""
        if self.index is None:
            return {"error": self.reason}
        return {"error": self.reason, "index": self.index}


# (account_id, event_id, payload) of an accepted event, before it has a seq.
Incoming = tuple[Account, Any, Any]


def _check_account(account: Any, index: int | None) -> Account:
    # bool is an int subclass and JSON true is no account id.
    if type(account) is int:
        if INT64_MIN <= account <= INT64_MAX:
            return account
        raise BadEvent("account_id out of signed 64-bit range", index)
    if type(account) is str:
        if 0 < len(account) <= MAX_ACCOUNT_CHARS:
            return account
        raise BadEvent(f"account_id string must have 1..{MAX_ACCOUNT_CHARS} characters", index)
    raise BadEvent("account_id must be an integer or a string", index)


def _check_event(obj: Any, index: int | None) -> Incoming:
    if type(obj) is not dict:
        raise BadEvent("event must be a JSON object", index)
    try:
        account = obj["account_id"]
    except KeyError:
        raise BadEvent("missing account_id", index) from None
    return _check_account(account, index), obj.get("event_id"), obj.get("payload")


def parse_frame(data: bytes | str, max_batch: int) -> tuple[list[Incoming], bool]:
    """The events of one client frame and whether it was a batch; raises BadEvent."""
    try:
        # Exact: a payload's integer past 64 bits reaches the handler unchanged, and an
        # account_id past 64 bits is an integer out of range, not a float. Bounded in depth:
        # every event is written again (to its shard, its journal, JetStream) a few levels
        # down; one that could not be stopped every event of its shard behind it.
        doc = jsonexact.loads(data, max_depth=MAX_DEPTH)
    except jsonexact.TooDeep as exc:
        raise BadEvent(exc.msg) from None
    except jsonexact.JSONDecodeError:
        raise BadEvent("not JSON") from None
    if type(doc) is list:
        if not doc:
            raise BadEvent("empty batch")
        if len(doc) > max_batch:
            raise BadEvent(f"batch of {len(doc)} events exceeds {max_batch}")
        return [_check_event(obj, i) for i, obj in enumerate(doc)], True
    return [_check_event(doc, None)], False


class Event:
    """One accepted event, as a shard holds it and a handler receives it."""

    __slots__ = ("account_id", "attempt", "env", "event_id", "payload", "seq")

    def __init__(
        self, seq: int, account_id: Account, event_id: Any, payload: Any, env: Any = None
    ) -> None:
        self.seq = seq  # arrival order, stamped by the router; increasing within an account
        self.account_id = account_id
        self.event_id = event_id
        self.payload = payload
        self.attempt = 1  # 1 on the first run, then 2, 3 ... on retries
        self.env = env  # the shard's HandlerEnv

    def wire(self) -> list[Any]:
        """The form events travel and are journaled in."""
        return [self.seq, self.account_id, self.event_id, self.payload]

    def __repr__(self) -> str:
        return f"Event(seq={self.seq}, account_id={self.account_id!r}, attempt={self.attempt})"
