"""tests/helpers.py's wait_for: what it returns, and what its timeout says."""

from __future__ import annotations

import ast
import itertools

import pytest

from helpers import wait_for


def test_wait_for_returns_the_first_true_value() -> None:
    values = iter([0, [], "ok", "later"])
    assert wait_for(lambda: next(values), 5, interval=0) == "ok"


def test_wait_for_until_returns_the_value_it_held_for() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter), 5, until=lambda n: n >= 3, interval=0) == 3


def test_a_timeout_names_what_and_shows_the_last_value_seen() -> None:
    counter = itertools.count()
    with pytest.raises(AssertionError) as info:
        wait_for(lambda: {"n": next(counter)}, 0.05, "n to reach 10**9", until=lambda d: False)
    message = str(info.value)
    assert message.startswith("timed out after 0.05s waiting for n to reach 10**9; last seen: ")
    last = ast.literal_eval(message.rpartition("last seen: ")[2])
    assert last["n"] >= 1  # polled more than once, and the latest value is the one shown


def test_show_renders_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"last seen: 3 lines$"):
        wait_for(lambda: [1, 2, 3], 0.01, until=lambda x: False, show=lambda x: f"{len(x)} lines")
