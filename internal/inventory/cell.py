"""A latest-value cell: one current value, and async iterators that wake on every change.

This is the shape of ListAndWatch: each stream first gets the current snapshot,
then every newer one. A stream that falls behind skips to the latest value
(every snapshot is complete, so nothing is lost by skipping), and a cancelled
stream leaves nothing behind: it only ever awaits one asyncio.Event, which is
dropped when the next value is published.

Must only be used from the event loop's thread; other threads publish through
`loop.call_soon_threadsafe(cell.publish, value)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Watchable(Protocol[T_co]):
    """What a reader of a latest value needs: the value now, and a stream of changes."""

    @property
    def value(self) -> T_co: ...

    def watch(self) -> AsyncIterator[T_co]: ...


class SnapshotCell(Generic[T]):
    def __init__(self, initial: T) -> None:
        self._value = initial
        self._version = 0
        self._changed = asyncio.Event()

    @property
    def value(self) -> T:
        return self._value

    @property
    def version(self) -> int:
        return self._version

    def publish(self, value: T) -> bool:
        """Replace the value and wake every watcher; equal values are ignored."""
        if value == self._value:
            return False
        self._value = value
        self._version += 1
        # Swap the event before setting the old one, so a watcher that wakes
        # and re-arms waits on the new event, never on one already set.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def next_change(self) -> asyncio.Event:
        """An event set by the next publish (of a different value): for a reader that waits
        on this cell and on something else at once."""
        return self._changed

    async def watch(self) -> AsyncIterator[T]:
        """Yield the current value at once, then each newer value as it arrives."""
        while True:
            # Take the event before yielding: a publish that happens while the
            # consumer is busy with this value still wakes the next wait.
            changed = self._changed
            yield self._value
            await changed.wait()

    async def wait_for_version(self, version: int) -> T:
        """Return once the cell has reached at least `version` (tests, probes)."""
        while self._version < version:
            await self._changed.wait()
        return self._value


async def first_of(*events: asyncio.Event) -> None:
    """Until one of `events` is set (at once if one is): what follows two cells waits on."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        # wait(), not `await waiter` under suppress(CancelledError), which would also swallow
        # the caller's own cancellation arriving meanwhile.
        await asyncio.wait(waiters)
