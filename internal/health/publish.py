"""Publishing a new snapshot, with one log line, one span event and one count per health change.

Health loops run outside any request, so a snapshot with health changes gets a
short span of its own ("HealthUpdate", child of whatever span is current) that
carries one event per changed device; a snapshot without changes costs no span.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.inventory.model import HealthChange
from gpu_device_plugin.inventory.reasons import code_of, xid_of
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)
_NO_TRACER: trace.Tracer = trace.NoOpTracer()


def publish_snapshot(
    cell: SnapshotCell[Inventory],
    newer: Inventory,
    *,
    source: str,
    metrics: MetricsSink = NULL_METRICS,
    tracer: trace.Tracer = _NO_TRACER,
) -> bool:
    """Replace the cell's inventory; returns False when nothing changed."""
    older = cell.value
    changes = older.health_changes(newer)
    if changes:
        with tracer.start_as_current_span("HealthUpdate", attributes={attrs.HEALTH_SOURCE: source}):
            _report(changes, source, metrics)
    added = len(newer.by_id.keys() - older.by_id.keys())
    removed = len(older.by_id.keys() - newer.by_id.keys())
    if added or removed:
        log.info("device set changed: %d added, %d removed (from %s)", added, removed, source)
    return cell.publish(newer)


def _report(changes: list[HealthChange], source: str, metrics: MetricsSink) -> None:
    span = trace.get_current_span()
    for change in changes:
        # The reason's own code: a bounded label, never read back from the text.
        kind = code_of(change.reason).value
        log.warning(
            "device health changed: %s %s -> %s (%s; from %s)",
            change.device_id,
            change.before.value,
            change.after.value,
            change.reason or "recovered",
            source,
        )
        metrics.health_transition(change.after.value, kind)
        event: dict[str, AttributeValue] = {
            attrs.DEVICE_ID: change.device_id,
            attrs.HEALTH: change.after.value,
            attrs.HEALTH_BEFORE: change.before.value,
            attrs.REASON: str(change.reason),  # plain text, without the code riding on it
            attrs.REASON_CLASS: kind,
        }
        xid = xid_of(change.reason)
        if xid is not None:
            event[attrs.XID] = xid
        span.add_event(attrs.HEALTH_CHANGED_EVENT, event)
