"""Keeping a part of the health path running: restart it with a backoff, never die in silence.

A part is a coroutine function that takes a `ready` event, sets it once it is
up (registered for events, watching its file ...) and runs until cancelled.
When it raises, the part is reported degraded (logged at ERROR with the
exception, a gauge, a span: status.py) and started again after a backoff; once
the new run is ready the part is restored. A part that returns on its own has
nothing left to watch (NVML events not supported here, say): that is not a
fault, and it is not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.health.status import HealthCheckStatus

# 1 s, 2 s, 4 s ... up to a minute: a part that fails at once on every start
# (a bug, a driver that refuses) logs one ERROR a minute, not a flood.
RESTART_BACKOFF = Backoff(initial_s=1.0, cap_s=60.0)

Part = Callable[[asyncio.Event], Awaitable[None]]


async def keep_running(
    source: str,
    part: Part,
    status: HealthCheckStatus,
    *,
    backoff: Backoff = RESTART_BACKOFF,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run `part` until it returns or this is cancelled; restart it whenever it raises.

    `on_ready` is called every time a run becomes ready (the first and each restart).
    """
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        ready = asyncio.Event()
        became_ready: list[float] = []

        async def announce(ready: asyncio.Event = ready, became_ready: list[float] = became_ready) -> None:
            await ready.wait()
            became_ready.append(loop.time())
            status.restore(source)
            if on_ready is not None:
                on_ready()

        announcer = asyncio.create_task(announce(), name=f"{source}-ready")
        try:
            await part(ready)
            return
        except Exception as err:  # CancelledError is a BaseException: it passes through
            status.degrade(source, err)
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        # A run that stayed up longer than the longest delay starts the backoff over;
        # one that fails on every start waits longer each time.
        if became_ready and loop.time() - became_ready[0] >= backoff.cap_s:
            attempt = 0
        await asyncio.sleep(backoff.delay(attempt))
        attempt += 1
