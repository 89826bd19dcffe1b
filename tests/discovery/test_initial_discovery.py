"""The first discovery (what it does when NVML cannot start), and make_backend building each kind."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.backends.fake.discover import FakeBackend
from gpu_device_plugin.backends.nvml.discover import NvmlBackend
from gpu_device_plugin.backends.nvml.driver_root import DriverRoot
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.backends.registry import make_backend
from gpu_device_plugin.discovery.initial import initial_inventory
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Inventory
from testsupport.fake_nvml import ERROR_UNKNOWN, FakeGpu, FakeNvml, NVMLError

DISCOVERY_LOG = "gpu_device_plugin.discovery.initial"


def broken_nvml(tmp_path: Path) -> NvmlBackend:
    lib = FakeNvml(init_error=NVMLError(ERROR_UNKNOWN, "Driver Not Loaded"))
    return NvmlBackend(NvmlSession(lib), driver_root=DriverRoot(tmp_path), sysfs_root=tmp_path)


def test_fail_on_init_error_reraises(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="NVML could not be initialised: Driver Not Loaded"):
        initial_inventory(broken_nvml(tmp_path), fail_on_init_error=True)


def test_without_fail_on_init_error_serves_nothing_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=DISCOVERY_LOG)

    inventory = initial_inventory(broken_nvml(tmp_path), fail_on_init_error=False)

    assert inventory == Inventory(devices=(), backend="nvml")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "NVML could not be initialised: Driver Not Loaded; serving zero devices (--fail-on-init-error is off)"
    ]


@pytest.mark.parametrize("fail_on_init_error", [True, False], ids=["fail-on", "fail-off"])
def test_working_backend_is_discovered_and_logged(
    fail_on_init_error: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lib = FakeNvml(gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", minor=1)])
    nvml = NvmlBackend(NvmlSession(lib), driver_root=DriverRoot(tmp_path), sysfs_root=tmp_path)
    caplog.set_level(logging.INFO, logger=DISCOVERY_LOG)

    inventory = initial_inventory(nvml, fail_on_init_error=fail_on_init_error)

    assert [d.id for d in inventory.devices] == ["GPU-a", "GPU-b"]
    assert [r.getMessage() for r in caplog.records if r.name == DISCOVERY_LOG] == [
        "discovered 2 device(s) with the nvml backend (driver 550.54.15, CUDA 12.4)"
    ]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_devices=2),
            FakeBackend(count=2),
            id="fake-count",
        ),
        pytest.param(
            DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_config=Path("/etc/gpus.yaml")),
            FakeBackend(config_path=Path("/etc/gpus.yaml")),
            id="fake-file",
        ),
    ],
)
def test_make_backend_builds_the_fake_backend(config: DiscoveryConfig, expected: FakeBackend) -> None:
    assert make_backend(config) == expected


def test_make_backend_builds_nvml_without_touching_the_gpu() -> None:
    # Building the backend must not initialise NVML: that happens on discover().
    built = make_backend(DiscoveryConfig(kind=DiscoveryKind.NVML))
    assert isinstance(built, NvmlBackend)
    assert built.name == "nvml"
