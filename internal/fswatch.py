"""An inotify watch of one folder that is armed the moment it is created.

watchfiles' `awatch` only starts watching on its first iteration, so a caller
cannot know when an edit will be seen; here the watch exists once the object
does, which lets the daemon (and tests) act on "ready" without a race. The
blocking wait runs in a thread of the watch's own that returns within one step
of being cancelled, and a cancelled wait returns only once that thread has.

`names` narrows the watch to some entries of the folder: changes to any other
entry (a log file written next to the config, an editor's swap file) are
dropped before the caller wakes, so a reader of one file is not woken, and
cannot be fed back, by its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from watchfiles import Change
from watchfiles._rust_notify import RustNotify

Changes = set[tuple[Change, Path]]


class FolderWatch:
    def __init__(
        self,
        folder: Path,
        *,
        names: Iterable[str] | None = None,
        debounce_ms: int = 50,
        step_ms: int = 10,
    ) -> None:
        self.folder = folder
        self.names = frozenset(names) if names is not None else None
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._notify = RustNotify([str(folder)], False, False, 0, False, False)
        # A thread of its own, not the loop's default executor: a watch blocks its thread for
        # good, and one per plugin server (a MIG node serves many) would take every thread
        # asyncio.to_thread has, stalling everything else that runs there.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fswatch-{folder.name}")

    async def next_changes(self) -> Changes:
        """Wait for the next batch of changes in the folder (to the watched names only)."""
        while True:
            stop = threading.Event()
            waiting = asyncio.get_running_loop().run_in_executor(
                self._thread, self._notify.watch, self._debounce_ms, self._step_ms, 1000, stop
            )
            try:
                raw = await asyncio.shield(waiting)
            except asyncio.CancelledError:
                stop.set()
                # The thread returns within one step; waited for, so that close() never
                # runs while it is still inside the watch.
                with contextlib.suppress(Exception):
                    await waiting
                raise
            if not isinstance(raw, set):
                continue
            changes = {(Change(kind), Path(path)) for kind, path in raw}
            if self.names is not None:
                changes = {(kind, path) for kind, path in changes if path.name in self.names}
            if changes:
                return changes

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._notify.close()

    def __enter__(self) -> FolderWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
