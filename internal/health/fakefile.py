"""Live edits of the fake backend's YAML file become health changes.

Watches the file's folder rather than the file: editors replace files by
rename, and a Kubernetes ConfigMap volume swaps a `..data` symlink, neither of
which an inotify watch on the old inode would see. A broken edit is logged and
ignored; the last good snapshot stays.
"""

from __future__ import annotations

import asyncio
import logging

from gpu_device_plugin.discovery.fake import FakeBackend
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.fswatch import FolderWatch
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.inventory import Inventory, SnapshotCell

log = logging.getLogger(__name__)


async def follow_fake_file(
    backend: FakeBackend, cell: SnapshotCell[Inventory], *, ready: asyncio.Event | None = None
) -> None:
    if backend.config_path is None:
        raise ValueError("follow_fake_file needs a backend with a config file")
    with FolderWatch(backend.config_path.resolve().parent) as watcher:
        # Re-read once the watch is in place: an edit made before it would be lost.
        reread(backend, cell)
        if ready is not None:
            ready.set()
        while True:
            await watcher.next_changes()
            reread(backend, cell)


def reread(backend: FakeBackend, cell: SnapshotCell[Inventory]) -> None:
    try:
        newer = backend.discover()
    except ConfigError as err:
        log.warning("ignoring an edit of the fake config (keeping the last good one): %s", err)
        return
    publish_snapshot(cell, newer, source=f"fake config {backend.config_path}")
