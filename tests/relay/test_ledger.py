"""Mapping a peer's acknowledged byte count back to the messages it holds."""

from __future__ import annotations

from skns.relay.ledger import Ledger


def ledger_with(*writes: int | list[int]) -> Ledger:
    """A ledger fed ``writes``: an int is that many non-message bytes, a list a batch of frames."""
    ledger = Ledger()
    for write in writes:
        if isinstance(write, int):
            ledger.other(write)
        else:
            ledger.messages([b"x" * size for size in write])
    return ledger


def test_a_message_counts_once_every_byte_of_its_frame_is_acknowledged() -> None:
    # 100 bytes of handshake, then frames of 10, 20, 30 bytes, a 6-byte pong, 40 bytes.
    ledger = ledger_with(100, [10, 20, 30], 6, [40])
    assert ledger.out == 206 and ledger.recorded == 4
    expected = {0: 0, 100: 0, 109: 0, 110: 1, 129: 1, 130: 2, 160: 3, 166: 3, 205: 3, 206: 4}
    for acked, confirmed in expected.items():
        assert Ledger.acknowledged(ledger_with(100, [10, 20, 30], 6, [40]), acked) == confirmed
        assert ledger_with(100, [10, 20, 30], 6, [40]).unconfirmed(acked) == 4 - confirmed


def test_acknowledgements_coming_in_forget_confirmed_batches() -> None:
    ledger = ledger_with(50, *([[10] * 32] * 100))  # 100 batches of 32 frames
    assert len(ledger) == 100
    assert ledger.acknowledged(50 + 320 * 40 + 5) == 40 * 32  # and none of the 41st
    assert len(ledger) == 60 and ledger.confirmed == 40 * 32
    # Later figures only grow; the count is all told, not since the last call.
    assert ledger.acknowledged(50 + 320 * 40 + 25) == 40 * 32 + 2
    assert ledger.unconfirmed(ledger.out) == 0 and len(ledger) == 0


def test_nothing_written_nothing_unconfirmed() -> None:
    assert Ledger().unconfirmed(0) == 0
    assert ledger_with(120).unconfirmed(0) == 0
