"""The typed configuration: every bad value is a ConfigError naming the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_device_plugin.allocator import AllocateOptions
from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.resources.names import DEFAULT_RESOURCE_NAME, check_resource_name
from gpu_device_plugin.server.sockets import DEFAULT_PLUGIN_DIR


@pytest.mark.parametrize(
    "name",
    [
        "example.com/gpu",
        "nvidia.com/gpu",
        "gpu.example.org/a100-80gb",
        "a.b-c.d/GPU_x.1",
        "x/y",
        f"example.com/{'g' * 63}",
    ],
)
def test_valid_resource_names_are_accepted(name: str) -> None:
    assert check_resource_name(name) == name
    assert ServeConfig(resource_name=name).resource_name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("bad", "must be <domain>/<name>", id="no-slash"),
        pytest.param("", "must be <domain>/<name>", id="empty"),
        pytest.param("/gpu", "is not a valid DNS subdomain", id="no-domain"),
        pytest.param("Example.com/gpu", "is not a valid DNS subdomain", id="upper-case-domain"),
        pytest.param("exa_mple.com/gpu", "is not a valid DNS subdomain", id="underscore-domain"),
        pytest.param("-example.com/gpu", "is not a valid DNS subdomain", id="domain-leading-dash"),
        pytest.param(f"{'a' * 254}/gpu", "is not a valid DNS subdomain", id="domain-too-long"),
        pytest.param("kubernetes.io/gpu", "reserved", id="kubernetes-io"),
        pytest.param("node.kubernetes.io/gpu", "reserved", id="kubernetes-io-subdomain"),
        pytest.param("k8s.io/gpu", "reserved", id="k8s-io"),
        pytest.param("example.com/", "is not a valid qualified name", id="no-name"),
        pytest.param("example.com/-gpu", "is not a valid qualified name", id="name-leading-dash"),
        pytest.param("example.com/gpu/a", "is not a valid qualified name", id="two-slashes"),
        pytest.param("example.com/g p u", "is not a valid qualified name", id="name-space"),
        pytest.param(f"example.com/{'g' * 64}", "is not a valid qualified name", id="name-too-long"),
    ],
)
def test_malformed_resource_names_are_refused(name: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServeConfig(resource_name=name)
    assert caught.value.field == "resource-name"
    assert reason in caught.value.reason


def test_defaults() -> None:
    config = ServeConfig()
    assert config.resource_name == DEFAULT_RESOURCE_NAME == "example.com/gpu"
    assert config.device_plugin_dir == DEFAULT_PLUGIN_DIR == Path("/var/lib/kubelet/device-plugins")
    assert config.discovery.kind is DiscoveryKind.NVML
    assert config.discovery.fail_on_init_error is True
    assert config.allocate == AllocateOptions()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({}, "fake-config", id="fake-neither"),
        pytest.param({"fake_config": Path("gpus.yaml"), "fake_devices": 2}, "fake-config", id="fake-both"),
        pytest.param({"fake_devices": -1}, "fake-devices", id="fake-devices-negative"),
        pytest.param({"fake_devices": 1025}, "fake-devices", id="fake-devices-too-many"),
    ],
)
def test_bad_fake_discovery_is_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DiscoveryConfig(kind=DiscoveryKind.FAKE, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"fake_devices": 0}, id="zero-devices"),
        pytest.param({"fake_devices": 1024}, id="most-devices"),
        pytest.param({"fake_config": Path("gpus.yaml")}, id="file"),
    ],
)
def test_good_fake_discovery_is_accepted(kwargs: dict[str, object]) -> None:
    DiscoveryConfig(kind=DiscoveryKind.FAKE, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("nvidia.com", id="no-class"),
        pytest.param("nvidia.com/gpu=x", id="equals-sign"),
    ],
)
def test_bad_cdi_kind_is_refused(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServeConfig(allocate=AllocateOptions(cdi_kind=kind))
    assert caught.value.field == "cdi-kind"


def test_config_error_message_starts_with_the_field() -> None:
    err = ConfigError("resource-name", "'bad' must be <domain>/<name>")
    assert str(err) == "resource-name: 'bad' must be <domain>/<name>"


def test_a_driver_root_must_be_an_existing_absolute_folder(tmp_path: Path) -> None:
    assert DiscoveryConfig(driver_root=tmp_path).driver_root == tmp_path
    for bad in (tmp_path / "missing", Path("relative"), tmp_path / "file"):
        (tmp_path / "file").touch()
        with pytest.raises(ConfigError) as caught:
            DiscoveryConfig(driver_root=bad)
        assert caught.value.field == "driver-root"
