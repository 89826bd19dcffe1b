"""The backend registry, and each backend's own answer to "what watches your health?"."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.backends.fake.discover import FakeBackend
from gpu_device_plugin.backends.nvml.discover import NvmlBackend, nvml_backend
from gpu_device_plugin.backends.nvml.driver_root import DriverRoot
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.backends.registry import BACKENDS, make_backend
from gpu_device_plugin.discovery.backend import DiscoveryBackend
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.health.source import HealthWiring
from gpu_device_plugin.health.status import FAKE_FILE, NVML_EVENTS, NVML_LOOP
from gpu_device_plugin.health.tracker import RecoveryPolicy
from gpu_device_plugin.health.xid import IgnoredXids
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from testsupport.fake_nvml import FakeGpu, FakeNvml


def wiring(inventory: Inventory) -> HealthWiring:
    return HealthWiring(
        cell=SnapshotCell(inventory),
        ignored_xids=IgnoredXids(),
        recovery=RecoveryPolicy(),
        probe_interval_s=10.0,
    )


def test_every_kind_the_flag_accepts_has_a_backend() -> None:
    assert set(BACKENDS) == set(DiscoveryKind)


def test_a_kind_without_a_backend_is_a_configuration_error_not_nvml() -> None:
    only_nvml = {DiscoveryKind.NVML: nvml_backend}
    with pytest.raises(ConfigError, match="no backend of kind 'fake' \\(known: nvml\\)") as raised:
        make_backend(DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_devices=1), only_nvml)
    assert raised.value.field == "discovery"


def nvml(tmp_path: Path, *uuids: str) -> NvmlBackend:
    lib = FakeNvml(gpus=[FakeGpu(uuid=u, minor=i) for i, u in enumerate(uuids)])
    return NvmlBackend(NvmlSession(lib), driver_root=DriverRoot(tmp_path), sysfs_root=tmp_path)


@pytest.mark.parametrize(
    ("build", "sources"),
    [
        pytest.param(lambda _tmp: FakeBackend(count=2), None, id="fake-count-has-nothing-to-watch"),
        pytest.param(
            lambda tmp: FakeBackend(config_path=tmp / "gpus.yaml"), (FAKE_FILE,), id="fake-file-is-watched"
        ),
        pytest.param(lambda tmp: nvml(tmp), None, id="nvml-without-devices-has-nothing-to-watch"),
        pytest.param(lambda tmp: nvml(tmp, "GPU-a"), (NVML_LOOP, NVML_EVENTS), id="nvml-events-and-probes"),
    ],
)
def test_each_backend_says_what_watches_its_health(
    tmp_path: Path, build: object, sources: tuple[str, ...] | None
) -> None:
    (tmp_path / "gpus.yaml").write_text("devices: [{}]\n")
    backend: DiscoveryBackend = build(tmp_path)  # type: ignore[operator]
    inventory = backend.discover()
    found = backend.health_source(wiring(inventory))
    assert (None if found is None else found.sources) == sources
