"""The typed config refuses what the CLI refuses too: numbers not finite or out of range, contradictions.

The CLI checks first (naming where a value came from); these hold for anyone
building the config another way (the demo, tests, a future config source).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.health.config import HealthConfig
from gpu_device_plugin.health.tracker import RecoveryPolicy


@pytest.mark.parametrize(
    "seconds",
    [math.nan, math.inf, -math.inf, 0.0, -1.0, 3600.5],
    ids=["nan", "inf", "-inf", "zero", "negative", "over-an-hour"],
)
def test_probe_interval_is_finite_positive_and_at_most_an_hour(seconds: float) -> None:
    with pytest.raises(ConfigError) as caught:
        HealthConfig(probe_interval_s=seconds)
    assert caught.value.field == "health-probe-interval"
    assert caught.value.reason == (f"must be a number of seconds from above 0 to 3600, got {seconds:g}")


@pytest.mark.parametrize(
    "seconds", [math.nan, math.inf, -0.5, 86401.0], ids=["nan", "inf", "negative", "over-a-day"]
)
def test_quiet_period_is_finite_and_at_most_a_day(seconds: float) -> None:
    with pytest.raises(ConfigError) as caught:
        HealthConfig(recovery=RecoveryPolicy(quiet_period_s=seconds))
    assert caught.value.field == "health-quiet-period"
    assert "must be a number of seconds from 0 to 86400" in caught.value.reason


@pytest.mark.parametrize(("interval", "quiet"), [(0.001, 0.0), (3600.0, 86400.0), (10.0, 60.0)])
def test_bounds_themselves_are_accepted(interval: float, quiet: float) -> None:
    HealthConfig(probe_interval_s=interval, recovery=RecoveryPolicy(quiet_period_s=quiet))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"fake_devices": 2}, "--fake-devices", id="devices"),
        pytest.param({"fake_config": Path("gpus.yaml")}, "--fake-config", id="file"),
        pytest.param(
            {"fake_devices": 2, "fake_config": Path("gpus.yaml")},
            "--fake-config and --fake-devices",
            id="both",
        ),
    ],
)
def test_nvml_with_a_fake_option_is_a_contradiction(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DiscoveryConfig(kind=DiscoveryKind.NVML, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == "discovery"
    assert caught.value.reason.startswith(f"nvml contradicts {named}, which only the fake backend reads")
