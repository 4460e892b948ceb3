"""The pure parts of the router in cluster mode: message ids of client event ids."""

from __future__ import annotations

from skns.executor.clusterrouter import message_id


def test_an_event_id_gives_the_same_message_id_on_every_host() -> None:
    # Fixed value: two routers (two hosts, two processes) must agree.
    assert message_id(7, "order-1") == "ebe011d347918ab4069ccc67cfe4d9821"


def test_the_account_and_the_type_of_the_event_id_count() -> None:
    ids = {
        message_id(7, "1"),
        message_id(7, 1),
        message_id("7", 1),
        message_id(8, 1),
        message_id(7, [1]),
        message_id(7, 2**70),  # past 64 bits: exact, not a float
        message_id(7, 2**70 + 1),
    }
    assert len(ids) == 7
