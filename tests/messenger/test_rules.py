"""The rules checker: a correct history passes; each kind of violation is caught."""

from __future__ import annotations

import dataclasses

import pytest

from skns.messenger.rules import RULES, Answer, Message, check

SENDERS = ["ann", "bob", "cid"]


def history(n: int) -> list[Message]:
    """n correctly stored messages: seq 1..n, each sender's counts 1, 2, ..."""
    counts: dict[str, int] = {}
    out = []
    for seq in range(1, n + 1):
        sender = SENDERS[(seq * 7) % len(SENDERS)]
        counts[sender] = counts.get(sender, 0) + 1
        out.append(Message(seq, sender, f"text {seq}", f"t{seq:06d}", counts[sender]))
    return out


def answer_to(stored: list[Message], seq: int, history_len: int = 10) -> Answer:
    own = stored[seq - 1]
    window = tuple(stored[max(0, seq - history_len) : seq])
    return Answer(own.sender, own.text, window)


def correct(n: int = 25) -> tuple[list[Message], list[Answer]]:
    stored = history(n)
    return stored, [answer_to(stored, seq) for seq in range(1, n + 1)]


def test_correct_history_passes() -> None:
    stored, answers = correct()
    verdict = check(answers, stored)
    assert verdict.ok, verdict.examples
    assert verdict.answers == 25 and verdict.rows == 25
    assert set(verdict.counts) == set(RULES)


def test_short_history_answers_hold_fewer_messages() -> None:
    stored, answers = correct(3)
    assert [len(a.messages) for a in answers] == [1, 2, 3]
    assert check(answers, stored).ok


def test_answers_alone_without_table() -> None:
    _, answers = correct()
    verdict = check(answers)
    assert verdict.ok and verdict.rows is None


def broken(verdict_rules: list[str], expected: str) -> None:
    assert expected in verdict_rules, verdict_rules


def test_duplicate_seq_across_answers() -> None:
    stored, answers = correct()
    # Two requests were both given seq 12 (the second by a replica that did not lock).
    twin = dataclasses.replace(stored[11], sender="zed", text="twin", sender_count=1)
    window = (*stored[2:11], twin)
    answers.append(Answer("zed", "twin", window))
    verdict = check(answers)
    broken(verdict.broken(), "unique_seq")
    assert verdict.counts["unique_seq"] == 1  # reported once, not per answer showing it


def test_duplicate_seq_in_table() -> None:
    stored, answers = correct()
    table = [*stored, dataclasses.replace(stored[4], text="again")]
    broken(check(answers, table).broken(), "unique_seq")


def test_duplicate_sender_count() -> None:
    stored = history(12)
    # seq 12 reuses the count of the sender's previous message.
    own = stored[11]
    previous = [m for m in stored[:11] if m.sender == own.sender][-1]
    stored[11] = dataclasses.replace(own, sender_count=previous.sender_count)
    answers = [answer_to(stored, seq) for seq in range(1, 13)]
    verdict = check(answers, stored)
    broken(verdict.broken(), "unique_sender_count")


def test_answer_with_a_later_message() -> None:
    stored, answers = correct()
    # The answer to seq 15 also shows seq 16, stored after it.
    answers[14] = Answer(answers[14].sender, answers[14].text, (*answers[14].messages, stored[15]))
    verdict = check(answers, stored)
    broken(verdict.broken(), "no_later")


def test_answer_ending_before_a_later_message_is_also_caught_when_reordered() -> None:
    stored, answers = correct()
    # Own message in the middle, a later one after it (the answer is still "oldest first").
    a = answers[19]
    answers[19] = Answer(a.sender, a.text, (*a.messages[1:], stored[20]))
    assert "no_later" in check(answers).broken()


def test_answer_skipping_a_message() -> None:
    stored, answers = correct()
    a = answers[17]
    answers[17] = Answer(a.sender, a.text, a.messages[:4] + a.messages[5:])  # drops seq 13
    verdict = check(answers, stored)
    broken(verdict.broken(), "no_skip")
    assert "13" in verdict.examples["no_skip"][0]


def test_short_answer_while_history_is_long_enough() -> None:
    _stored, answers = correct()
    a = answers[17]
    answers[17] = Answer(a.sender, a.text, a.messages[-5:])  # 5 messages where 10 exist
    broken(check(answers).broken(), "no_skip")


def test_gap_in_the_table() -> None:
    stored, answers = correct()
    table = stored[:9] + stored[10:]  # seq 10 is missing
    broken(check(answers[:5], table).broken(), "no_skip")


def test_sender_count_out_of_order_across_answers() -> None:
    stored, _ = correct()
    # Swap the counts of two messages of one sender: each count unique, order wrong.
    ann = [i for i, m in enumerate(stored) if m.sender == "ann"]
    i, j = ann[1], ann[2]
    stored[i], stored[j] = (
        dataclasses.replace(stored[i], sender_count=stored[j].sender_count),
        dataclasses.replace(stored[j], sender_count=stored[i].sender_count),
    )
    answers = [answer_to(stored, seq) for seq in range(1, len(stored) + 1)]
    verdict = check(answers, stored)
    broken(verdict.broken(), "sender_count")
    assert not verdict.counts["unique_sender_count"]


def test_sender_count_skipping_a_number() -> None:
    stored = history(8)
    last = stored[7]
    stored[7] = dataclasses.replace(last, sender_count=last.sender_count + 1)  # 1, 2, 4
    answers = [answer_to(stored, seq) for seq in range(1, 9)]
    assert "sender_count" in check(answers).broken()
    assert "sender_count" in check([], stored).broken()


def test_answer_without_its_own_message() -> None:
    _stored, answers = correct()
    a = answers[12]
    answers[12] = Answer(a.sender, "something else", a.messages)
    broken(check(answers).broken(), "consistent")


def test_answer_not_oldest_first() -> None:
    _stored, answers = correct()
    a = answers[12]
    answers[12] = Answer(a.sender, a.text, (a.messages[1], a.messages[0], *a.messages[2:]))
    broken(check(answers).broken(), "consistent")


def test_answered_message_missing_from_the_table() -> None:
    stored, answers = correct()
    # A 200 was sent for seq 25, but the table does not hold it: not durable.
    verdict = check(answers, stored[:24])
    broken(verdict.broken(), "consistent")


def test_answered_message_differs_from_the_table() -> None:
    stored, answers = correct()
    table = list(stored)
    table[6] = dataclasses.replace(table[6], text="rewritten")
    broken(check(answers, table).broken(), "consistent")


@pytest.mark.parametrize("history_len", [1, 3, 10])
def test_history_length_is_a_parameter(history_len: int) -> None:
    stored = history(15)
    answers = [answer_to(stored, seq, history_len) for seq in range(1, 16)]
    assert check(answers, stored, history=history_len).ok
    if history_len > 1:
        assert "no_skip" in check(answers, stored, history=history_len + 1).broken()


def test_examples_are_bounded() -> None:
    _stored, answers = correct(60)
    answers = [Answer(a.sender, a.text, a.messages[-1:]) for a in answers]  # all skip
    verdict = check(answers)
    assert verdict.counts["no_skip"] == 59  # seq 1 has nothing before it
    assert len(verdict.examples["no_skip"]) == verdict.max_examples
