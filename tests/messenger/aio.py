"""Run async tests without a pytest plugin."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run the decorated coroutine function on a fresh uvloop (fixtures pass through)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        uvloop.run(test(*args, **kwargs))

    return wrapper
