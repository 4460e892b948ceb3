"""The pure parts of the executor's cluster bench (the bench itself is ``make bench``)."""

from skns.cluster import execbench
from skns.executor.placement import partition_of


def test_the_failover_feeder_has_one_account_in_each_partition() -> None:
    for partitions in (1, 16, 64):
        accounts = execbench._one_account_each(partitions)
        assert [partition_of(a, partitions) for a in accounts] == list(range(partitions))


def test_runs_of_an_earlier_phases_events_are_counted_apart_not_as_unknown() -> None:
    acked = {10: 1, 11: 2}
    runs = [[4, 7, 100, 1.0, 1], [10, 1, 100, 2.0, 1], [11, 2, 100, 3.0, 1]]
    verdict, earlier = execbench._checked(acked, runs)
    assert verdict.ok and earlier == 1
    assert execbench._said(verdict, earlier) == (
        "all ran, first runs in order per account; 1 runs of earlier phases' events"
    )


def test_events_run_again_are_said_beside_a_passing_verdict() -> None:
    runs = [[10, 1, 100, 2.0, 1], [11, 1, 100, 3.0, 1], [10, 1, 100, 4.0, 1]]
    verdict, earlier = execbench._checked({10: 1, 11: 1}, runs)
    assert verdict.ok and verdict.duplicates == 1
    assert execbench._said(verdict, earlier).endswith("; 1 ran again (at least once)")


def test_an_acked_event_that_never_ran_fails_the_check() -> None:
    verdict, earlier = execbench._checked({10: 1, 11: 2}, [[10, 1, 100, 2.0, 1]])
    assert not verdict.ok and verdict.missing == 1 and earlier == 0
    assert execbench._said(verdict, earlier).startswith("FAILED: 2 acked, 1 runs, 1 missing")


def test_acked_events_that_never_run_end_in_the_verdict_not_in_a_crash() -> None:
    runs = execbench._all_ran([], {5: 1}, timeout=0.05)
    verdict, _ = execbench._checked({5: 1}, runs)
    assert runs == [] and verdict.missing == 1
