"""Tasks by id, TTL and the memory cap, on a fake clock."""

from __future__ import annotations

from skns.tasks.store import DONE, QUEUED, TIMED_OUT, Store, Task


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def task(n: int) -> Task:
    return Task(f"id-{n}", n, "soft", [])


def test_a_finished_task_is_kept_for_the_ttl_then_forgotten() -> None:
    clock = Clock()
    store = Store(ttl=10.0, max_bytes=10**6, clock=clock)
    t = task(1)
    store.add(t)
    assert store.get("id-1") is t and t.state == QUEUED
    clock.now += 100  # a task still running never expires
    assert store.get("id-1") is t
    store.finish(t, DONE, b"frame")
    clock.now += 9.9
    assert store.get("id-1") is t and t.frame == b"frame"
    clock.now += 0.1
    assert store.get("id-1") is None
    assert store.stats() == {"tasks": 0, "kept": 0, "kept_bytes": 0, "expired": 1, "evicted": 0}


def test_expiry_follows_finishing_order() -> None:
    clock = Clock()
    store = Store(ttl=10.0, max_bytes=10**6, clock=clock)
    tasks = [task(n) for n in range(3)]
    for t in tasks:
        store.add(t)
    store.finish(tasks[2], DONE, b"c")
    clock.now += 5
    store.finish(tasks[0], TIMED_OUT, b"a")
    clock.now += 5
    store.sweep()
    assert store.get("id-2") is None
    assert store.get("id-0") is tasks[0]
    assert store.get("id-1") is tasks[1]  # never finished


def test_past_the_memory_cap_the_oldest_results_go_first() -> None:
    clock = Clock()
    store = Store(ttl=10.0, max_bytes=25, clock=clock)
    tasks = [task(n) for n in range(3)]
    for t in tasks:
        store.add(t)
        store.finish(t, DONE, b"x" * 10)
    assert store.get("id-0") is None
    assert store.get("id-1") is tasks[1] and store.get("id-2") is tasks[2]
    assert store.stats()["evicted"] == 1
    assert store.bytes == 20


def test_finishing_drops_the_watchers() -> None:
    store = Store(ttl=10.0, max_bytes=100)
    t = Task("x", 1, "soft", ["a connection"])
    store.add(t)
    store.finish(t, DONE, b"f")
    assert t.watchers == [] and t.finished
