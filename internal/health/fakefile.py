"""Live edits of the fake backend's YAML file become health changes.

Watches the file's folder rather than the file: editors replace files by
rename, and a Kubernetes ConfigMap volume swaps a `..data` symlink, neither of
which an inotify watch on the old inode would see. A broken edit is logged and
ignored; the last good snapshot stays. Injected XIDs (`xid: 79`) go through the
same classification as real ones.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from opentelemetry import trace

from gpu_device_plugin.discovery.fake_config import fake_id, load_fake_config, to_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.fswatch import FolderWatch
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.health.xid import XidPolicy, describe_xid
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)


def fake_snapshot(path: Path, xids: XidPolicy) -> Inventory:
    """The file's devices, with critical injected XIDs turned into Unhealthy."""
    config = load_fake_config(path)
    inventory = to_inventory(config)
    injected = {fake_id(d, i): d.xid for i, d in enumerate(config.devices or ()) if d.xid is not None}
    for device_id, xid in injected.items():
        if not xids.is_critical(xid):
            log.info("%s on %s: caused by an application, device stays healthy", describe_xid(xid), device_id)
    return inventory.with_health(
        {
            device_id: (Health.UNHEALTHY, describe_xid(xid))
            for device_id, xid in injected.items()
            if xids.is_critical(xid)
        }
    )


async def follow_fake_file(
    path: Path,
    cell: SnapshotCell[Inventory],
    *,
    xids: XidPolicy | None = None,
    ready: asyncio.Event | None = None,
    metrics: MetricsSink = NULL_METRICS,
    tracer: trace.Tracer | None = None,
) -> None:
    policy = xids or XidPolicy()
    tracer = tracer or trace.NoOpTracer()
    # The folder as named, not resolved: in a ConfigMap volume the file resolves into a
    # timestamped folder that the kubelet deletes at its next update.
    folder = path.absolute().parent  # noqa: ASYNC240 - once, at start
    with FolderWatch(folder) as watcher:
        # Re-read once the watch is in place: an edit made before it would be lost.
        reread(path, cell, policy, metrics=metrics, tracer=tracer)
        if ready is not None:
            ready.set()
        while True:
            await watcher.next_changes()
            reread(path, cell, policy, metrics=metrics, tracer=tracer)


def reread(
    path: Path,
    cell: SnapshotCell[Inventory],
    xids: XidPolicy,
    *,
    metrics: MetricsSink = NULL_METRICS,
    tracer: trace.Tracer | None = None,
) -> None:
    try:
        newer = fake_snapshot(path, xids)
    except ConfigError as err:
        log.warning("ignoring an edit of the fake config (keeping the last good one): %s", err)
        return
    publish_snapshot(
        cell, newer, source=f"fake config {path}", metrics=metrics, tracer=tracer or trace.NoOpTracer()
    )
