"""Decimal text of huge ints, checked against str()."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skns.tasks.digits import decimal_digits


@pytest.fixture(autouse=True)
def no_digit_limit() -> Iterator[None]:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # str() is the reference here
    yield
    sys.set_int_max_str_digits(old)


@given(st.integers(min_value=0, max_value=70_000), st.integers(min_value=0))
def test_matches_str(bits: int, seed: int) -> None:
    n = random.Random(seed).getrandbits(bits)  # any size up to 21,000 digits
    assert decimal_digits(n) == str(n).encode()


EDGES = [0, 1, 9, 10, 2**64, 10**6000 - 1, 10**6000, 2**20000 - 1, 2**20000, 2**20001, 10**30000]


@pytest.mark.parametrize("n", EDGES, ids=[f"{n.bit_length()}-bits" for n in EDGES])
def test_edges(n: int) -> None:
    assert decimal_digits(n) == str(n).encode()


def test_a_big_factorial() -> None:
    n = math.factorial(20_000)  # 77,338 digits: the recursive path, several levels deep
    assert decimal_digits(n) == str(n).encode()


def test_works_under_the_default_str_limit() -> None:
    sys.set_int_max_str_digits(4300)
    n = 10**5000 + 7
    sys.set_int_max_str_digits(0)
    expected = str(n).encode()
    sys.set_int_max_str_digits(4300)
    assert decimal_digits(n) == expected  # str() would raise ValueError here
