from skns.executor.schedule import Scheduler


def test_one_runner_per_account_in_fifo_order() -> None:
    s: Scheduler[int] = Scheduler()
    assert s.push("a", 1) is True  # idle account: start it
    assert s.push("a", 2) is False  # busy: queued behind 1
    assert s.push("b", 10) is True  # another account runs concurrently
    assert s.push("a", 3) is False
    assert s.active == 2
    assert s.queued == 4
    assert s.advance("a") == 2
    assert s.advance("a") == 3
    assert s.advance("b") is None  # b went idle
    assert s.advance("a") is None
    assert s.active == 0
    assert s.queued == 0


def test_idle_account_starts_again() -> None:
    s: Scheduler[int] = Scheduler()
    assert s.push(7, 1)
    assert s.advance(7) is None
    assert s.push(7, 2) is True


def test_int_and_str_accounts_are_separate() -> None:
    s: Scheduler[int] = Scheduler()
    assert s.push(1, 1)
    assert s.push("1", 2)
    assert s.active == 2
