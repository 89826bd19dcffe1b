"""NVIDIA's sharing.mps and flags.mpsRoot, mapped onto our settings; what is refused and how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpu_device_plugin import nvidia_config
from gpu_device_plugin.backends.fake.spec import FakeConfig, to_inventory
from gpu_device_plugin.cli.nvidia_file import flag_defaults
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.settings import ResourceSettings, SharedResource, Sharing, SharingStrategy

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia"
GPU = "nvidia.com/gpu"


@pytest.mark.parametrize(
    ("fixture", "sharing", "values"),
    [
        pytest.param(
            "mps.yaml",
            # failRequestsGreaterThanOne left out: NVIDIA's default for MPS is true.
            Sharing(SharingStrategy.MPS, (SharedResource(GPU, 4),), fail_requests_greater_than_one=True),
            {},
            id="mps",
        ),
        pytest.param(
            "mps-root.yaml",
            Sharing(SharingStrategy.MPS, (SharedResource(GPU, 10),), fail_requests_greater_than_one=False),
            {"mps_root": "/var/run/mps"},
            id="mps-root-and-explicit-false",
        ),
    ],
)
def test_mps_examples_become_the_sharing_settings(
    fixture: str, sharing: Sharing, values: dict[str, Any]
) -> None:
    defaults = flag_defaults(nvidia_config.load(FIXTURES / fixture))

    assert defaults.sharing == sharing
    assert defaults.values == values
    # flags.mpsRoot now does something: it is no longer named as without effect.
    assert defaults.ignored == []


def test_mps_on_eight_gpus_serves_what_nvidia_would() -> None:
    defaults = flag_defaults(nvidia_config.load(FIXTURES / "mps-root.yaml"))
    assert defaults.sharing is not None
    inventory = to_inventory(FakeConfig(count=8))

    managers = plan_resources(ResourceSettings(GPU, sharing=defaults.sharing), inventory)

    assert {m.resource_name: len(m.devices(inventory).devices) for m in managers} == {GPU: 80}


def test_mps_root_in_our_section_points_at_nvidias_key() -> None:
    with pytest.raises(ConfigError) as caught:
        nvidia_config.parse({"gpuDevicePlugin": {"mpsRoot": "/x"}})
    assert caught.value.field == "gpuDevicePlugin.mpsRoot"
    assert "set flags.mpsRoot instead" in caught.value.reason


def test_mps_settings_without_resources_share_nothing() -> None:
    data = {"flags": {"migStrategy": "none"}, "sharing": {"mps": {"renameByDefault": True}}}
    assert flag_defaults(nvidia_config.parse(data)).sharing is None
