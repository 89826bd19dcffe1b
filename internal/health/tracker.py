"""Per-device health state: faults in, Healthy/Unhealthy out, with damped recovery.

Pure state over an injected clock: the NVML loop and the probe feed it
observations, and `verdicts(now)` says what each device's health should be.
A device marked unhealthy recovers (policy `auto`) once it has answered probes
correctly for a quiet period with no new fault. A device that fails again soon
after recovering waits twice as long the next time (up to a cap), so a flapping
GPU stays out of service instead of bouncing pods.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gpu_device_plugin.inventory import Health


class Recovery(enum.StrEnum):
    AUTO = "auto"  # come back after a quiet period
    NEVER = "never"  # NVIDIA's behaviour: unhealthy until the plugin restarts


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    mode: Recovery = Recovery.AUTO
    quiet_period_s: float = 60.0
    # A fault within this long after a recovery counts as flapping.
    flap_window_s: float = 600.0
    max_backoff_factor: int = 16


@dataclass
class _DeviceState:
    unhealthy_since: float | None = None
    last_fault: float = 0.0
    reason: str = ""
    # Faulted and still not answering probes correctly.
    probe_failing: bool = False
    last_recovery: float | None = None
    backoff_factor: int = 1


@dataclass
class HealthTracker:
    policy: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    _states: dict[str, _DeviceState] = field(default_factory=dict)

    def _state(self, device_id: str) -> _DeviceState:
        return self._states.setdefault(device_id, _DeviceState())

    def fault(self, device_id: str, reason: str, now: float) -> None:
        """A critical event or failed probe: unhealthy now, quiet period restarts."""
        state = self._state(device_id)
        if state.unhealthy_since is None:
            if state.last_recovery is not None and now - state.last_recovery < self.policy.flap_window_s:
                state.backoff_factor = min(state.backoff_factor * 2, self.policy.max_backoff_factor)
            state.unhealthy_since = now
        state.last_fault = now
        state.reason = reason

    def probe(self, device_id: str, ok: bool, reason: str, now: float) -> None:
        state = self._state(device_id)
        if not ok:
            state.probe_failing = True
            self.fault(device_id, reason, now)
        else:
            state.probe_failing = False

    def quiet_period(self, device_id: str) -> float:
        return self.policy.quiet_period_s * self._state(device_id).backoff_factor

    def verdicts(self, now: float) -> dict[str, tuple[Health, str]]:
        """Health and reason for every device the tracker has seen; recovers the quiet ones."""
        out: dict[str, tuple[Health, str]] = {}
        for device_id, state in self._states.items():
            if state.unhealthy_since is not None and self._may_recover(device_id, state, now):
                state.unhealthy_since = None
                state.last_recovery = now
                state.reason = ""
            if state.unhealthy_since is None:
                out[device_id] = (Health.HEALTHY, "")
            else:
                out[device_id] = (Health.UNHEALTHY, state.reason)
        return out

    def _may_recover(self, device_id: str, state: _DeviceState, now: float) -> bool:
        return (
            self.policy.mode is Recovery.AUTO
            and not state.probe_failing
            and now - state.last_fault >= self.quiet_period(device_id)
        )

    def next_recovery_check(self, now: float) -> float | None:
        """When the earliest unhealthy device could next recover (for the loop's timer)."""
        if self.policy.mode is Recovery.NEVER:
            return None
        times = [
            s.last_fault + self.quiet_period(d)
            for d, s in self._states.items()
            if s.unhealthy_since is not None and not s.probe_failing
        ]
        return min(times, default=None)
