"""HealthTracker over a hand-driven clock: faults, quiet periods, damping."""

from __future__ import annotations

from gpu_device_plugin.health.tracker import HealthTracker, Recovery, RecoveryPolicy
from gpu_device_plugin.inventory import Health

BAD = (Health.UNHEALTHY, "XID 79")
GOOD = (Health.HEALTHY, "")


def tracker(**policy: object) -> HealthTracker:
    return HealthTracker(RecoveryPolicy(**{"quiet_period_s": 60.0, **policy}))  # type: ignore[arg-type]


def test_fault_marks_unhealthy_at_once() -> None:
    t = tracker()
    t.fault("a", "XID 79", now=0)
    assert t.verdicts(now=0) == {"a": BAD}


def test_recovers_after_quiet_period_with_good_probes() -> None:
    t = tracker()
    t.fault("a", "XID 79", now=0)
    t.probe("a", True, "", now=30)
    assert t.verdicts(now=59.9)["a"] == BAD
    assert t.verdicts(now=60)["a"] == GOOD


def test_new_fault_restarts_quiet_period() -> None:
    t = tracker()
    t.fault("a", "XID 79", now=0)
    t.fault("a", "XID 48", now=50)
    assert t.verdicts(now=100)["a"] == (Health.UNHEALTHY, "XID 48")
    assert t.verdicts(now=110)["a"] == GOOD


def test_failing_probe_blocks_recovery_until_it_answers() -> None:
    t = tracker()
    t.probe("a", False, "GPU is lost", now=0)
    assert t.verdicts(now=500)["a"] == (Health.UNHEALTHY, "GPU is lost")
    assert t.next_recovery_check(now=500) is None
    t.probe("a", True, "", now=500)
    assert t.verdicts(now=500)["a"] == GOOD, "quiet since the last fault at 0"


def test_never_mode_keeps_nvidias_behaviour() -> None:
    t = tracker(mode=Recovery.NEVER)
    t.fault("a", "XID 79", now=0)
    t.probe("a", True, "", now=1)
    assert t.verdicts(now=10_000)["a"] == BAD
    assert t.next_recovery_check(now=10_000) is None


def test_flapping_device_waits_longer_each_time() -> None:
    t = tracker()
    t.fault("a", "XID 79", now=0)
    assert t.verdicts(now=60)["a"] == GOOD
    t.fault("a", "XID 79", now=100)  # fails again soon after recovering
    assert t.quiet_period("a") == 120
    assert t.verdicts(now=219)["a"] == BAD
    assert t.verdicts(now=220)["a"] == GOOD
    t.fault("a", "XID 79", now=230)
    assert t.quiet_period("a") == 240
    assert t.next_recovery_check(now=230) == 470


def test_damping_is_capped() -> None:
    t = tracker(max_backoff_factor=4)
    now = 0.0
    for _ in range(6):
        t.fault("a", "x", now)
        now += t.quiet_period("a")
        t.verdicts(now)
    assert t.quiet_period("a") == 240


def test_devices_are_independent() -> None:
    t = tracker()
    t.fault("a", "XID 79", now=0)
    t.probe("b", True, "", now=0)
    assert t.verdicts(now=1) == {"a": BAD, "b": GOOD}
