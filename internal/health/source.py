"""What a backend hands the daemon to keep its devices' health current: a loop and its names.

A backend that can watch health (NVML events and probes, the fake backend's
file) builds a HealthSource from a HealthWiring; one that cannot says None.
The daemon supervises the loop (supervise.py) and reports its parts under the
names given here (status.py); it never needs to know which backend it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace

from gpu_device_plugin.health.status import HealthCheckStatus
from gpu_device_plugin.health.supervise import Part
from gpu_device_plugin.health.tracker import RecoveryPolicy
from gpu_device_plugin.health.xid import IgnoredXids
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink


@dataclass(frozen=True)
class HealthSource:
    """A health loop to run, and the names its parts report under (the loop's own first)."""

    part: Part
    sources: tuple[str, ...]


@dataclass(frozen=True)
class HealthWiring:
    """Everything a backend's health loop may use: the cell it publishes to, policy, telemetry."""

    cell: SnapshotCell[Inventory]
    ignored_xids: IgnoredXids
    recovery: RecoveryPolicy
    probe_interval_s: float
    status: HealthCheckStatus | None = None
    metrics: MetricsSink = NULL_METRICS
    tracer: trace.Tracer | None = None
