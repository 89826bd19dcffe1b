"""Publishing a new snapshot, with one log line and one span event per health change."""

from __future__ import annotations

import logging

from opentelemetry import trace

from gpu_device_plugin.inventory import Inventory, SnapshotCell

log = logging.getLogger(__name__)


def publish_snapshot(cell: SnapshotCell[Inventory], newer: Inventory, *, source: str) -> bool:
    """Replace the cell's inventory; returns False when nothing changed."""
    older = cell.value
    changes = older.health_changes(newer)
    span = trace.get_current_span()
    for change in changes:
        log.warning(
            "device health changed: %s %s -> %s (%s; from %s)",
            change.device_id,
            change.before.value,
            change.after.value,
            change.reason or "recovered",
            source,
        )
        span.add_event(
            "device health changed",
            {
                "gpu.device_id": change.device_id,
                "gpu.health": change.after.value,
                "gpu.reason": change.reason,
            },
        )
    added = len(newer.by_id.keys() - older.by_id.keys())
    removed = len(older.by_id.keys() - newer.by_id.keys())
    if added or removed:
        log.info("device set changed: %d added, %d removed (from %s)", added, removed, source)
    return cell.publish(newer)
