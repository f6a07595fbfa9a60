"""Waiting for something another thread or task makes true, without a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], object], seconds: float = 10) -> None:
    """Until `check()` (awaited if it returns a coroutine) is truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def comes_true(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether `condition()` becomes true within `seconds` (polled from a plain thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
