"""Key-value updates over the lean connection: the answers read as nats-py reads them, and
a lease renewed through it on a real 3-node cluster."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
)

from skns.cluster.lean import Lean
from skns.cluster.leankv import LeanKV, api_answer, revision
from skns.cluster.lease import Lease, lease_bucket
from skns.cluster.natscluster import NatsCluster
from skns.cluster.settings import ClusterSettings


def test_an_ack_gives_its_sequence() -> None:
    assert revision("", b'{"stream":"KV_b","seq":17}') == 17


def test_a_wrong_last_revision_is_the_compare_and_set_failure() -> None:
    for code in (10071, 10164):
        data = b'{"error":{"code":400,"err_code":%d,"description":"wrong last sequence: 3"}}'
        with pytest.raises(KeyWrongLastSequenceError):
            revision("", data % code)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"error":{"code":400,"err_code":10058,"description":"bad"}}', BadRequestError),
        (b'{"error":{"description":"no code"}}', APIError),
        (b"not json", APIError),
        (b"[1]", APIError),
        (b'{"stream":"KV_b"}', APIError),
        (b'{"stream":"KV_b","seq":"17"}', APIError),
    ],
)
def test_anything_else_raises_an_api_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        revision("", data)


def test_no_responders_is_no_stream_response() -> None:
    with pytest.raises(NoStreamResponseError):
        api_answer("503", b"")


def test_a_lease_renewed_over_the_lean_connection_is_fenced_by_its_successor(
    nats_cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # The product's default lease_ttl, and its lease_ttl / 2 for the lean requests: 1.5 s
    # against answers of at most 50 ms measured with both cores loaded. A shorter ttl let
    # the key age out between the steps below on a loaded machine.
    ttl = 3.0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        nc = await nats.connect(nats_cluster.urls[0])
        lean = Lean(ClusterSettings(nats=tuple(nats_cluster.urls[1:]), name="t"), "test")
        assert await lean.open(asyncio.Event())
        try:
            kv = await lease_bucket(nc.jetstream(), "leankv_test", ttl, 3)
            quick = LeanKV(lean, kv, "leankv_test", ttl / 2)
            # The new bucket's stream reaches the lean connection's server over the routes
            # a moment after its creation was answered: a write there can still meet no
            # responders (the first take failed so in 3 of 15 fresh clusters under load).
            deadline = loop.time() + 20
            while True:
                try:
                    await quick.create("ready", b"")
                    break
                except NoStreamResponseError:
                    assert loop.time() < deadline, "the stream never answered the lean side"
                    await asyncio.sleep(0.1)
            a = Lease(quick, "k", "a", ttl, ttl / 3, js=nc.jetstream(), bucket="leankv_test")
            assert await a.take()
            first = a.revision
            assert await a.renew() and a.revision is not None and a.revision > (first or 0)
            with pytest.raises(KeyWrongLastSequenceError):
                await quick.update("k", b"x", last=1)  # not the last revision
            # A create over a live value fails; over a delete marker it writes.
            with pytest.raises(KeyWrongLastSequenceError):
                await quick.create("k", b"x")
            assert await quick.create("fresh", b"1") > 0
            await kv.delete("fresh")
            assert await quick.create("fresh", b"2") > 0
            assert (await kv.get("fresh")).value == b"2"
            # a stops renewing; once the key aged out b takes it, and a's renewal fails.
            b = Lease(kv, "k", "b", ttl, ttl / 3, js=nc.jetstream(), bucket="leankv_test")
            deadline = loop.time() + 30
            while not await b.take():
                assert loop.time() < deadline, "the lease never expired"
                await asyncio.sleep(0.1)
            assert not await a.renew() and a.revision is None
            # Fenced by b's revision, not given up after an unanswered renewal.
            fenced = "lost the lease k to another holder"
            assert fenced in [r.getMessage() for r in caplog.records]
        finally:
            await lean.close()
            await nc.close()

    with caplog.at_level(logging.WARNING, logger="skns.cluster"):
        asyncio.run(scenario())
