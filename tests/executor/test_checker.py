from skns.executor.checker import verify

ACKED = {1: "a", 2: "b", 3: "a", 4: "a"}


def run(seq: int, account: str, pid: int = 100) -> list:
    return [seq, account, pid, 1000.0 + seq, 1]


def test_clean_run() -> None:
    verdict = verify(ACKED, [run(1, "a"), run(2, "b"), run(3, "a"), run(4, "a")])
    assert verdict.ok, verdict.summary()
    assert verdict.first == 1001.0
    assert verdict.last == 1004.0


def test_missing_unknown_wrong_account() -> None:
    verdict = verify(ACKED, [run(1, "a"), run(2, "a"), run(3, "a"), run(9, "a")])
    assert not verdict.ok
    assert verdict.missing == 1
    assert verdict.unknown == 1
    assert verdict.wrong_account == 1


def test_out_of_order() -> None:
    verdict = verify(ACKED, [run(3, "a"), run(1, "a"), run(2, "b"), run(4, "a")])
    assert not verdict.ok
    assert verdict.out_of_order >= 1


def test_rerun_after_a_crash_is_at_least_once() -> None:
    runs = [run(1, "a"), run(3, "a"), run(2, "b"), run(3, "a", pid=200), run(4, "a", pid=200)]
    assert not verify(ACKED, runs).ok  # exactly once: the second run of 3 fails it
    verdict = verify(ACKED, runs, exactly_once=False)
    assert verdict.ok, verdict.summary()
    assert verdict.duplicates == 1


def test_rerun_out_of_order_in_one_process_fails() -> None:
    runs = [run(1, "a"), run(3, "a"), run(2, "b"), run(3, "a"), run(4, "a")]
    assert not verify(ACKED, runs, exactly_once=False).ok
