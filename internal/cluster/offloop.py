"""Running a blocking API call off the event loop, on a thread that can never delay exit.

asyncio.to_thread would do, but its pool's threads are joined when the process
exits: one request stuck on an unreachable API server would hold SIGTERM up
until its timeout, and the plugin must stop within 2 s. A daemon thread per
call (API calls are rare: a few per inventory change) is abandoned at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def off_loop(function: Callable[[], T], *, name: str = "cluster-api") -> T:
    """`function()` on its own daemon thread; its result or exception, awaited on the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = function()
        except BaseException as error:
            outcome: tuple[T | None, BaseException | None] = (None, error)
        else:
            outcome = (result, None)
        # RuntimeError: the loop closed while we were blocked; nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
