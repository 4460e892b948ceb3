from __future__ import annotations

import pytest

from skns.executor.pull import delivery


def test_a_delivery_reply_subject_gives_stream_and_consumer_sequence_and_pending() -> None:
    reply = "$JS.ACK.SKNS_EXEC.abc123.1.4071.17.1764570000000000000.9"
    assert delivery(reply) == (4071, 17, 9)


def test_the_form_with_a_domain_and_an_account_hash_is_read_too() -> None:
    reply = "$JS.ACK._.ACCHASH.SKNS_EXEC.abc123.1.4071.17.1764570000000000000.9.tok"
    assert delivery(reply) == (4071, 17, 9)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "_INBOX.abc.1",
        "$JS.ACK.SKNS_EXEC.abc.1.2",
        "$JS.NAK.SKNS_EXEC.abc123.1.4071.17.1764570000000000000.9",
        "$JS.ACK.SKNS_EXEC.abc123.1.x.17.1764570000000000000.9",
    ],
)
def test_anything_else_is_not_a_delivery(reply: str) -> None:
    assert delivery(reply) is None
