"""Waiting for state that announces itself with no event (e.g. grpc's server-side teardown)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(check: Callable[[], bool], timeout: float = 2.0, what: str = "condition") -> None:
    """Re-check after every short yield to the loop until `check()` holds; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.01)
