"""Checking a run: from what was acked and what the record handler wrote.

``acked`` maps each acked seq to its account; ``runs`` are the record lines
``[seq, account_id, pid, time, attempt]`` in the order each shard wrote them.
A run passes when every acked seq ran, nothing else ran, each run carries its
event's account, and each account's events ran in seq order. Within one
process (pid) the seqs of an account must strictly increase; across a crash
the restarted process may run again events whose completion was not durable
(at-least-once), so order is checked on first runs and, with
``exactly_once``, any second run is a failure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .ring import Account


@dataclasses.dataclass
class Verdict:
    events: int = 0  # acked
    runs: int = 0  # record lines
    missing: int = 0  # acked, never ran
    unknown: int = 0  # ran, never acked
    duplicates: int = 0  # runs beyond the first of an event
    wrong_account: int = 0
    out_of_order: int = 0  # runs that broke their account's seq order
    first: float = 0.0  # time of the first completion
    last: float = 0.0  # time of the last completion
    exactly_once: bool = True
    examples: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        bad = self.missing + self.unknown + self.wrong_account + self.out_of_order
        if self.exactly_once:
            bad += self.duplicates
        return bad == 0

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    def summary(self) -> str:
        state = "OK" if self.ok else "FAILED"
        text = (
            f"{state}: {self.events} acked, {self.runs} runs, {self.missing} missing, "
            f"{self.unknown} unknown, {self.duplicates} duplicate runs, "
            f"{self.wrong_account} wrong account, {self.out_of_order} out of order"
        )
        return text + "".join(f"\n  {e}" for e in self.examples)


def verify(
    acked: Mapping[int, Account], runs: Iterable[list[Any]], *, exactly_once: bool = True
) -> Verdict:
    verdict = Verdict(events=len(acked), exactly_once=exactly_once)
    seen: set[int] = set()
    last_first: dict[Account, int] = {}  # account -> last seq run for the first time
    last_in_pid: dict[tuple[Account, int], int] = {}  # (account, pid) -> last seq run there
    for seq, account, pid, when, _attempt in runs:
        verdict.runs += 1
        if not verdict.first or when < verdict.first:
            verdict.first = when
        verdict.last = max(verdict.last, when)
        expected = acked.get(seq)
        if expected is None:
            verdict.unknown += 1
            verdict.note(f"seq {seq} ran but was never acked")
            continue
        if expected != account or type(expected) is not type(account):
            verdict.wrong_account += 1
            verdict.note(f"seq {seq} ran for account {account!r}, not {expected!r}")
        key = (account, pid)
        if last_in_pid.get(key, 0) >= seq:
            verdict.out_of_order += 1
            verdict.note(f"account {account!r}: seq {seq} after {last_in_pid[key]} in pid {pid}")
        last_in_pid[key] = seq
        if seq in seen:
            verdict.duplicates += 1
            continue
        seen.add(seq)
        if last_first.get(account, 0) > seq:
            verdict.out_of_order += 1
            verdict.note(f"account {account!r}: seq {seq} first ran after {last_first[account]}")
        last_first[account] = seq
    missing = set(acked) - seen
    verdict.missing = len(missing)
    for seq in sorted(missing)[:3]:
        verdict.note(f"seq {seq} (account {acked[seq]!r}) acked but never ran")
    return verdict
