"""Waiting for what a real process does, without guessing how long it takes on a busy machine."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Return as soon as `predicate()` holds; fail when it has not held within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not reached in {timeout:g} s")
