"""The statement's workload on the executor in cluster mode: 10,000 events over 1,000
accounts with a 1 s handler, half sent to each of two hosts (own NATS cluster)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from skns.cluster.natscluster import NatsCluster

from .exec_hosts import check, running, send_at_once, statement_workload, wait_all_ran

EVENTS = 10_000
ACCOUNTS = 1_000
BATCH = 500


def test_the_statement_workload_split_over_two_hosts(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Finishes within 1.05x of the lower bound (the busiest account's event count in
    seconds, from the first event sent to the last one finished), every acked event ran
    once, each account's events in order."""
    with running(nats_cluster, tmp_path, "ab", duration=1.0) as hosts:
        a, b = hosts
        events, bound = statement_workload(EVENTS, ACCOUNTS)
        accounts = [e["account_id"] for e in events]
        half = EVENTS // 2
        started = time.time()
        # Two clients at once, one per host.
        acked = send_at_once([(a, events[:half]), (b, events[half:])], batch=BATCH)
        sent = time.time() - started
        assert len(acked) == EVENTS
        runs = wait_all_ran(hosts, acked, bound * 2 + 30)
        verdict = check(acked, runs)
        assert verdict.ok, verdict.summary()
        total = verdict.last - started
        # Where the time above the bound went, on the busiest account: its first event's
        # start after the first send, and each next event's start after the previous end.
        busiest = max(Counter(accounts).items(), key=lambda kv: kv[1])[0]
        times = sorted(r[3] for r in runs if r[1] == busiest)
        print(
            f"busiest account: first done {times[0] - started - 1:.3f} s late; "
            f"{(times[-1] - times[0]) / (len(times) - 1) - 1:.4f} s per event over 1 s"
        )
        print(
            f"workload: {total:.2f} s (sent in {sent:.2f} s) for a lower bound of {bound:.0f} s:"
            f" {total / bound:.3f}x; {verdict.duplicates} events ran again"
        )
        assert total <= bound * 1.05, f"{total:.2f} s > 1.05 x {bound:.0f} s"
