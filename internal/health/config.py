"""What health checking reads from the configuration: on or off, ignored XIDs, recovery, probes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gpu_device_plugin.durations import check_seconds
from gpu_device_plugin.health.tracker import RecoveryPolicy
from gpu_device_plugin.health.xid import IgnoredXids

MAX_PROBE_INTERVAL_S = 3600.0  # an hour: a probe less often than that is no health check
MAX_QUIET_PERIOD_S = 86400.0  # a day, before the up-to-16x doubling for flapping devices


class HealthChecks(enum.StrEnum):
    ALL = "all"
    NONE = "none"
    DISABLED = "disabled"  # same as none: the keyword NVIDIA's users know


@dataclass(frozen=True)
class HealthConfig:
    checks: HealthChecks = HealthChecks.ALL
    """all: NVML events and probes (nvml) or file edits (fake); none/disabled: devices stay Healthy."""
    ignored_xids: IgnoredXids = field(default_factory=IgnoredXids)
    """XIDs that leave a device healthy (caused by applications, not the GPU)."""
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    """When an unhealthy device may become Healthy again."""
    probe_interval_s: float = 10.0
    """Seconds between probes of every device (nvml)."""

    @property
    def enabled(self) -> bool:
        return self.checks is HealthChecks.ALL

    def __post_init__(self) -> None:
        check_seconds(
            "health-probe-interval", self.probe_interval_s, maximum=MAX_PROBE_INTERVAL_S, zero_ok=False
        )
        check_seconds(
            "health-quiet-period", self.recovery.quiet_period_s, maximum=MAX_QUIET_PERIOD_S, zero_ok=True
        )
