"""Running the daemon's root tasks until a signal or the first of them ends.

Each root task is named; when one ends (normally or by an error) or SIGTERM /
SIGINT arrives, the others are cancelled and awaited with a deadline, so the
process exits promptly and every socket is removed by its owner's cleanup.

A second signal during that clean-up (a runtime that repeats SIGTERM, a user
pressing Ctrl-C twice) must not cut it short: our handlers stay installed until
the clean-up is over, and once a signal has asked us to stop, the rest of the
process's life (closing the loop, flushing exporters, exiting 0) ignores further
SIGTERM / SIGINT instead of falling back to the default action (exit 143, or a
KeyboardInterrupt traceback) that asyncio restores when its handlers go.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Mapping
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_root_tasks(
    tasks: Mapping[str, Coroutine[Any, Any, None]],
    *,
    stop: asyncio.Event | None = None,
    cancel_timeout: float = 1.5,
) -> None:
    """Run until `stop` is set, a signal arrives, or any task ends; re-raise its error."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if received:
            log.info("%s received again: already shutting down, clean-up continues", signum.name)
        else:
            log.info("%s received: shutting down", signum.name)
        received.append(signum)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    running = {asyncio.create_task(coro, name=name) for name, coro in tasks.items()}
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait(running | {stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in running | {stopper}:
            task.cancel()
        _, stuck = await asyncio.wait(running | {stopper}, timeout=cancel_timeout)
        for task in stuck:
            log.error("task %s did not stop within %.1f s", task.get_name(), cancel_timeout)
        # Only now, with every task's clean-up over, do the handlers go.
        release_signals(loop, ignore_from_now=bool(received))
    if stopper in done:
        log.info("stop requested: shutting down")
        return
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        log.error("task %s ended unexpectedly", task.get_name())


def release_signals(loop: asyncio.AbstractEventLoop, *, ignore_from_now: bool) -> None:
    """Remove our handlers; after a stop by signal, ignore further ones until the process exits.

    asyncio's removal restores the default action, and the loop closes after we
    return (it would restore it then too), so SIG_IGN is set right after the
    removal. Without a signal (stopped by the caller, a task ended) the defaults
    come back as usual: an embedding program (the tests) keeps its Ctrl-C.
    """
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        if ignore_from_now:
            signal.signal(signum, signal.SIG_IGN)
