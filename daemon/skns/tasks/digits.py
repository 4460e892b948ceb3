"""Decimal digits of huge integers in less than quadratic time.

CPython 3.11 converts an int to decimal text in quadratic time (300000! has
1.5 million digits and takes 35 s) and refuses more than 4300 digits unless
``sys.set_int_max_str_digits`` lifts the limit. The decimal module's libmpdec
multiplies big numbers in n log n, so a divide-and-conquer conversion through
it is fast: split the int at half its bits, convert both halves, recombine with
one exact Decimal multiplication by a (memoised) power of two. The same 300000!
takes 0.6 s. Small ints go through ``str``, which is faster below the cut-off.
"""

from __future__ import annotations

import decimal

# Below this many bits (about 6,000 digits) str() beats the recursion (measured).
_STR_BITS = 20000
# Leaves of the recursion: Decimal(int) of this size is cheap.
_LEAF_BITS = 2048


def decimal_digits(n: int) -> bytes:
    """The decimal text of the non-negative int ``n``, as ASCII bytes."""
    if n.bit_length() <= _STR_BITS:
        try:
            return str(n).encode()
        except ValueError:  # over sys.get_int_max_str_digits(): the recursion has no limit
            pass
    return _large(n).encode()


def _large(n: int) -> str:
    ctx = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    # Every operation here must be exact; a rounding would be a wrong result.
    ctx.traps[decimal.Inexact] = True
    ctx.traps[decimal.Rounded] = True
    powers: dict[int, decimal.Decimal] = {}

    def power_of_two(bits: int) -> decimal.Decimal:
        value = powers.get(bits)
        if value is None:
            if bits <= _LEAF_BITS:
                value = decimal.Decimal(1 << bits)
            else:
                half = bits >> 1
                value = ctx.multiply(power_of_two(half), power_of_two(bits - half))
            powers[bits] = value
        return value

    def convert(x: int, bits: int) -> decimal.Decimal:
        if bits <= _LEAF_BITS:
            return decimal.Decimal(x)
        half = bits >> 1
        high = x >> half
        low = x - (high << half)
        return ctx.add(
            convert(low, half), ctx.multiply(convert(high, bits - half), power_of_two(half))
        )

    return str(convert(n, n.bit_length()))
