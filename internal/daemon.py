"""Running the daemon's root tasks until a signal or the first of them ends.

Each root task is named; when one ends (normally or by an error) or SIGTERM /
SIGINT arrives, the others are cancelled and awaited with a deadline, so the
process exits promptly and every socket is removed by its owner's cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Mapping
from typing import Any

log = logging.getLogger(__name__)


async def run_root_tasks(
    tasks: Mapping[str, Coroutine[Any, Any, None]],
    *,
    stop: asyncio.Event | None = None,
    cancel_timeout: float = 1.5,
) -> None:
    """Run until `stop` is set, a signal arrives, or any task ends; re-raise its error."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = {asyncio.create_task(coro, name=name) for name, coro in tasks.items()}
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait(running | {stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for task in running | {stopper}:
            task.cancel()
        _, stuck = await asyncio.wait(running | {stopper}, timeout=cancel_timeout)
        for task in stuck:
            log.error("task %s did not stop within %.1f s", task.get_name(), cancel_timeout)
    if stopper in done:
        log.info("stop requested: shutting down")
        return
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        log.error("task %s ended unexpectedly", task.get_name())
