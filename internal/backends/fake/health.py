"""Live edits of the fake backend's YAML file become health changes.

Watches the file's folder rather than the file: editors replace files by
rename, and a Kubernetes ConfigMap volume swaps a `..data` symlink, neither of
which an inotify watch on the old inode would see. Only those two names wake
the reader (the file's own name and `..data`): anything else in the folder, a
log file above all, is none of its business, and once was a loop (each warning
written to a log beside a broken config woke the reader to warn again).

A broken edit is logged once per distinct content and ignored; the last good
snapshot stays. Content already read (good or bad) is not read again. Injected
XIDs (`xid: 79`) go through the same classification as real ones.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace

from gpu_device_plugin.backends.fake.spec import fake_id, parse_fake_config, to_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.fswatch import FolderWatch
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.health.xid import IgnoredXids, describe_xid
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)

# The name a ConfigMap volume swaps to publish an update (the kubelet's atomic writer).
CONFIGMAP_DATA_LINK = "..data"


def fake_snapshot(text: str, source: str, xids: IgnoredXids) -> Inventory:
    """The file's devices, with critical injected XIDs turned into Unhealthy."""
    config = parse_fake_config(text, source=source)
    inventory = to_inventory(config)
    injected = {fake_id(d, i): d.xid for i, d in enumerate(config.devices or ()) if d.xid is not None}
    for device_id, xid in injected.items():
        if xids.ignores(xid):
            log.info("%s on %s: caused by an application, device stays healthy", describe_xid(xid), device_id)
    return inventory.with_health(
        {
            device_id: (Health.UNHEALTHY, describe_xid(xid))
            for device_id, xid in injected.items()
            if not xids.ignores(xid)
        }
    )


@dataclass
class FakeFileReader:
    """Reads the file when it changed since the last read, and publishes what it holds."""

    path: Path
    cell: SnapshotCell[Inventory]
    xids: IgnoredXids
    metrics: MetricsSink = NULL_METRICS
    tracer: trace.Tracer | None = None
    # The content (or the read error) of the last read: the same again is no news.
    _last: str | None = field(default=None, init=False)

    def reread(self) -> None:
        try:
            text = self.path.read_text()
            seen = text
        except OSError as err:
            text = None
            seen = f"\0cannot read {self.path}: {err.strerror or err}"
        if seen == self._last:
            return
        self._last = seen
        try:
            if text is None:
                raise ConfigError("fake-config", seen[1:])
            newer = fake_snapshot(text, str(self.path), self.xids)
        except ConfigError as err:
            # Once per distinct content: the next warning needs a different edit.
            log.warning("ignoring an edit of the fake config (keeping the last good one): %s", err)
            return
        publish_snapshot(
            self.cell,
            newer,
            source=f"fake config {self.path}",
            metrics=self.metrics,
            tracer=self.tracer or trace.NoOpTracer(),
        )


async def follow_fake_file(
    path: Path,
    cell: SnapshotCell[Inventory],
    *,
    xids: IgnoredXids | None = None,
    ready: asyncio.Event | None = None,
    metrics: MetricsSink = NULL_METRICS,
    tracer: trace.Tracer | None = None,
) -> None:
    reader = FakeFileReader(path, cell, xids or IgnoredXids(), metrics=metrics, tracer=tracer)
    # The folder as named, not resolved: in a ConfigMap volume the file resolves into a
    # timestamped folder that the kubelet deletes at its next update.
    folder = path.absolute().parent  # noqa: ASYNC240 - once, at start
    with FolderWatch(folder, names={path.name, CONFIGMAP_DATA_LINK}) as watcher:
        # Re-read once the watch is in place: an edit made before it would be lost.
        reader.reread()
        if ready is not None:
            ready.set()
        while True:
            await watcher.next_changes()
            reader.reread()
