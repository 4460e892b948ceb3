"""Check the messenger's rules on what clients were answered (and on the table).

Pure: the load client and the tests feed it every answer they got (each with
the sender and text that were sent) and, when they can read it, the stored
table. The rules (DESIGN.md, messenger):

- ``unique_seq``: no two messages share a ``seq``;
- ``unique_sender_count``: no two messages of one sender share a ``sender_count``;
- ``no_later``: an answer never contains a message stored after the request's own;
- ``no_skip``: an answer never skips a message stored before its own: it is
  exactly the run of seqs ``own - history + 1 .. own`` (from 1 while history is short);

and two consistency checks that make the rules meaningful:

- ``sender_count``: a sender's counts follow its messages in seq order, one by one
  (the table: exactly 1..n);
- ``consistent``: an answer holds its own message, oldest first, and every message
  shown to a client is the one stored under that seq (a 200 is durable).

Seqs are numbered from 1 without gaps (the stores number each row after the
newest), which is what lets the checker know what an answer must contain.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .answers import HISTORY

RULES: dict[str, str] = {
    "unique_seq": "no two messages share a seq",
    "unique_sender_count": "no two messages of one sender share a sender_count",
    "no_later": "no answer holds a message stored after its own",
    "no_skip": "no answer skips a message stored before its own",
    "sender_count": "sender counts follow the sender's messages in seq order",
    "consistent": "answers hold their own message, oldest first, as stored",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    seq: int
    sender: str
    text: str
    created_at: Any
    sender_count: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        return cls(
            data["seq"], data["sender"], data["text"], data["created_at"], data["sender_count"]
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Message:
        return cls(*row)

    def same_content(self, other: Message) -> bool:
        """Equal but for ``created_at``, whose text form differs between JSON and the table."""
        return (self.seq, self.sender, self.text, self.sender_count) == (
            other.seq,
            other.sender,
            other.text,
            other.sender_count,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What one request sent and the messages it got back."""

    sender: str
    text: str
    messages: tuple[Message, ...]


@dataclasses.dataclass
class Verdict:
    answers: int = 0
    rows: int | None = None  # None: the table was not checked
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(RULES, 0))
    examples: dict[str, list[str]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    max_examples: int = 5

    def add(self, rule: str, detail: str) -> None:
        self.counts[rule] += 1
        if len(self.examples[rule]) < self.max_examples:
            self.examples[rule].append(detail)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def broken(self) -> list[str]:
        return [rule for rule, n in self.counts.items() if n]


def check(
    answers: Iterable[Answer], table: Sequence[Message] | None = None, history: int = HISTORY
) -> Verdict:
    """Every violation of the rules in ``answers`` (and ``table``, the stored rows)."""
    verdict = Verdict()
    by_seq: dict[int, Message] = {}
    seq_of_count: dict[tuple[str, int], int] = {}
    reported: set[tuple[str, object]] = set()

    def once(rule: str, key: object, detail: str) -> None:
        # The same conflict shows in many answers; count it once.
        if (rule, key) not in reported:
            reported.add((rule, key))
            verdict.add(rule, detail)

    def see(m: Message) -> None:
        known = by_seq.setdefault(m.seq, m)
        if known != m:
            once("unique_seq", (m.seq, known, m), f"seq {m.seq} is {known} and {m}")
        key = (m.sender, m.sender_count)
        seq = seq_of_count.setdefault(key, m.seq)
        if seq != m.seq:
            once(
                "unique_sender_count",
                (key, frozenset((seq, m.seq))),
                f"{m.sender!r} count {m.sender_count} at seq {seq} and {m.seq}",
            )

    for answer in answers:
        verdict.answers += 1
        _check_answer(answer, history, verdict, see)

    # Across all answers: a sender's counts rise with seq.
    by_sender: dict[str, list[Message]] = defaultdict(list)
    for m in by_seq.values():
        by_sender[m.sender].append(m)
    for sender, messages in by_sender.items():
        messages.sort(key=lambda m: m.seq)
        for a, b in itertools.pairwise(messages):
            if b.sender_count <= a.sender_count:
                verdict.add(
                    "sender_count",
                    f"{sender!r}: seq {a.seq} has count {a.sender_count},"
                    f" later seq {b.seq} has {b.sender_count}",
                )

    if table is not None:
        _check_table(table, by_seq, verdict)
    return verdict


def _check_answer(answer: Answer, history: int, verdict: Verdict, see: Any) -> None:
    messages = answer.messages
    for m in messages:
        see(m)
    own = next((m for m in messages if m.sender == answer.sender and m.text == answer.text), None)
    if own is None:
        verdict.add("consistent", f"answer to {answer.text!r} lacks its own message")
        return
    seqs = [m.seq for m in messages]
    if any(b <= a for a, b in itertools.pairwise(seqs)):
        verdict.add("consistent", f"answer to seq {own.seq} is not oldest first: {seqs}")
    later = [s for s in seqs if s > own.seq]
    if later:
        verdict.add("no_later", f"answer to seq {own.seq} holds later seqs {later}")
    missing = sorted(set(range(max(1, own.seq - history + 1), own.seq + 1)) - set(seqs))
    if missing:
        verdict.add("no_skip", f"answer to seq {own.seq} skips seqs {missing}")
    elif not later:
        # A complete window: consecutive messages of a sender in it have consecutive counts.
        last: dict[str, Message] = {}
        for m in messages:
            prev = last.get(m.sender)
            if prev is not None and m.sender_count != prev.sender_count + 1:
                verdict.add(
                    "sender_count",
                    f"answer to seq {own.seq}: {m.sender!r} has count {prev.sender_count}"
                    f" at seq {prev.seq}, then {m.sender_count} at seq {m.seq}",
                )
            last[m.sender] = m


def _check_table(table: Sequence[Message], shown: Mapping[int, Message], verdict: Verdict) -> None:
    verdict.rows = len(table)
    rows = sorted(table, key=lambda m: m.seq)
    stored: dict[int, Message] = {}
    previous = 0
    for m in rows:
        if m.seq == previous:
            verdict.add("unique_seq", f"table holds seq {m.seq} twice")
        elif m.seq != previous + 1:
            verdict.add("no_skip", f"table lacks seqs {previous + 1}..{m.seq - 1}")
        stored[m.seq] = m
        previous = m.seq
    counts: dict[str, list[Message]] = defaultdict(list)
    for m in rows:
        counts[m.sender].append(m)
    for sender, messages in counts.items():
        seen: set[int] = set()
        for expected, m in enumerate(messages, 1):
            if m.sender_count in seen:
                verdict.add(
                    "unique_sender_count", f"table: {sender!r} count {m.sender_count} twice"
                )
            elif m.sender_count != expected:
                verdict.add(
                    "sender_count",
                    f"table: {sender!r} message {expected} (seq {m.seq}) has count"
                    f" {m.sender_count}",
                )
            seen.add(m.sender_count)
    for seq, m in shown.items():
        row = stored.get(seq)
        if row is None:
            verdict.add("consistent", f"seq {seq} was answered but is not stored")
        elif not row.same_content(m):
            verdict.add("consistent", f"seq {seq} was answered as {m} but stored as {row}")
