"""The fake backend: --fake-devices N, and YAML files with `count` or `devices`."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gpu_device_plugin.backends.fake.discover import FakeBackend
from gpu_device_plugin.backends.fake.spec import (
    DEFAULT_MEMORY_MIB,
    DEFAULT_MODEL,
    fake_uuid,
    load_fake_config,
    to_inventory,
)
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Health, Inventory

UUID_SHAPE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def from_yaml(tmp_path: Path, text: str) -> Inventory:
    path = tmp_path / "gpus.yaml"
    path.write_text(textwrap.dedent(text))
    return FakeBackend(config_path=path).discover()


@pytest.mark.parametrize("count", [0, 1, 8, 1024], ids=lambda n: f"{n}-devices")
def test_fake_devices_gives_n_healthy_devices(count: int) -> None:
    inventory = FakeBackend(count=count).discover()

    assert len(inventory.devices) == count
    assert [d.index for d in inventory.devices] == list(range(count))
    assert all(d.health is Health.HEALTHY for d in inventory.devices)
    assert inventory.healthy_count == count
    assert inventory.backend == "fake"


def test_fake_device_ids_are_deterministic_distinct_and_short() -> None:
    first = [d.id for d in FakeBackend(count=16).discover().devices]
    again = [d.id for d in FakeBackend(count=16).discover().devices]

    assert first == again
    assert len(set(first)) == 16
    assert first == [fake_uuid(i) for i in range(16)]
    for device_id in first:
        assert len(device_id) <= 63
        assert UUID_SHAPE.match(device_id), device_id


def test_fake_uuid_is_pinned_across_releases() -> None:
    # The kubelet checkpoints allocations by id: changing these breaks upgrades.
    assert fake_uuid(0) == "GPU-659a3ef1-df3c-5a8f-9b42-b5a50c233913"
    assert fake_uuid(1) == "GPU-0c878c29-07c4-5906-b5b8-7834c9140bf2"


def test_growing_the_count_keeps_existing_ids() -> None:
    small = [d.id for d in FakeBackend(count=2).discover().devices]
    large = [d.id for d in FakeBackend(count=4).discover().devices]
    assert large[:2] == small


def test_count_file_matches_fake_devices(tmp_path: Path) -> None:
    assert from_yaml(tmp_path, "count: 3\n") == FakeBackend(count=3).discover()


def test_count_devices_carry_defaults(tmp_path: Path) -> None:
    (device,) = from_yaml(tmp_path, "count: 1\n").devices
    assert device.model == DEFAULT_MODEL
    assert device.memory_mib == DEFAULT_MEMORY_MIB
    assert device.compute_capability == (9, 0)
    assert device.minor == 0
    assert device.pci_bus_id == "0000:10:00.0"
    assert device.numa_node == 0


def test_count_file_defaults_apply_to_every_device(tmp_path: Path) -> None:
    inventory = from_yaml(
        tmp_path,
        """
        count: 2
        model: NVIDIA A100-SXM4-40GB
        memory_mib: 40960
        compute_capability: "8.0"
        driver_version: "535.104.05"
        cuda_version: "12.2"
        control_nodes: [/dev/nvidiactl, /dev/nvidia-uvm]
        """,
    )
    assert {d.model for d in inventory.devices} == {"NVIDIA A100-SXM4-40GB"}
    assert {d.memory_mib for d in inventory.devices} == {40960}
    assert {d.compute_capability for d in inventory.devices} == {(8, 0)}
    assert (inventory.driver_version, inventory.cuda_version) == ("535.104.05", "12.2")
    assert inventory.control_nodes == ("/dev/nvidiactl", "/dev/nvidia-uvm")


@pytest.mark.parametrize(
    ("count", "numa_nodes", "expected"),
    [
        pytest.param(4, 1, [0, 0, 0, 0], id="4-on-1-node"),
        pytest.param(4, 2, [0, 0, 1, 1], id="4-on-2-nodes"),
        pytest.param(8, 2, [0, 0, 0, 0, 1, 1, 1, 1], id="8-on-2-nodes"),
        pytest.param(3, 2, [0, 0, 1], id="3-on-2-nodes"),
        pytest.param(8, 4, [0, 0, 1, 1, 2, 2, 3, 3], id="8-on-4-nodes"),
        pytest.param(2, 4, [0, 2], id="more-nodes-than-devices"),
    ],
)
def test_numa_nodes_spread_devices_in_index_order(
    count: int, numa_nodes: int, expected: list[int], tmp_path: Path
) -> None:
    inventory = from_yaml(tmp_path, f"count: {count}\nnuma_nodes: {numa_nodes}\n")
    assert [d.numa_node for d in inventory.devices] == expected


def test_explicit_devices_keep_every_field(tmp_path: Path) -> None:
    inventory = from_yaml(
        tmp_path,
        """
        devices:
          - uuid: GPU-custom-a
            index: 0
            model: NVIDIA L4
            memory_mib: 23034
            numa: 1
            health: Unhealthy
            minor: 5
            pci_bus_id: "0000:3b:00.0"
            compute_capability: "8.9"
            device_nodes: [/dev/nvidia5]
        """,
    )
    (device,) = inventory.devices
    assert device.id == device.uuid == "GPU-custom-a"
    assert device.index == 0
    assert device.model == "NVIDIA L4"
    assert device.memory_mib == 23034
    assert device.numa_node == 1
    assert device.health is Health.UNHEALTHY
    assert device.health_reason  # says why, for logs and probes
    assert device.minor == 5
    assert device.pci_bus_id == "0000:3b:00.0"
    assert device.compute_capability == (8, 9)
    assert device.device_nodes == ("/dev/nvidia5",)


def test_explicit_devices_fill_in_what_they_leave_out(tmp_path: Path) -> None:
    inventory = from_yaml(tmp_path, "devices:\n  - {}\n  - {index: 5}\n")
    first, second = inventory.devices
    assert (first.index, first.id, first.minor) == (0, fake_uuid(0), 0)
    assert (second.index, second.id, second.minor) == (5, fake_uuid(5), 5)
    assert first.health is Health.HEALTHY
    assert first.health_reason == ""


def test_explicit_devices_are_listed_by_index(tmp_path: Path) -> None:
    inventory = from_yaml(tmp_path, "devices:\n  - {uuid: GPU-c, index: 2}\n  - {uuid: GPU-a, index: 0}\n")
    assert [(d.index, d.id) for d in inventory.devices] == [(0, "GPU-a"), (2, "GPU-c")]


def test_the_file_is_read_on_every_discover(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("devices:\n  - {index: 0}\n")
    fake = FakeBackend(config_path=path)
    assert fake.discover().devices[0].health is Health.HEALTHY

    path.write_text("devices:\n  - {index: 0, health: Unhealthy}\n")

    assert fake.discover().devices[0].health is Health.UNHEALTHY


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        pytest.param("count: [1\n", "", "not valid YAML", id="bad-yaml"),
        pytest.param("- 1\n- 2\n", "", "must be a YAML mapping", id="not-a-mapping"),
        pytest.param("", "", "must be a YAML mapping", id="empty-file"),
        pytest.param("count: 2\ndevices: [{}]\n", "devices", "exactly one", id="count-and-devices"),
        pytest.param("model: NVIDIA L4\n", "devices", "exactly one", id="neither"),
        pytest.param(
            "devices: [{uuid: GPU-a}, {uuid: GPU-a}]\n",
            "devices",
            "share uuid GPU-a",
            id="duplicate-uuid",
        ),
        pytest.param("devices: [{index: 1}, {index: 1}]\n", "devices", "share index 1", id="duplicate-index"),
        pytest.param(
            "devices: [{uuid: GPU-a, index: 3}, {uuid: GPU-b, index: 3}]\n",
            "devices",
            "share index 3",
            id="duplicate-index-distinct-uuids",
        ),
        pytest.param(
            "devices: [{health: Sick}]\n",
            "devices.0.health",
            "'Healthy' or 'Unhealthy'",
            id="bad-health",
        ),
        pytest.param("devices: [{}, {numa: -1}]\n", "devices.1.numa", "greater than", id="negative-numa"),
        pytest.param("devices: [{colour: red}]\n", "devices.0.colour", "not permitted", id="unknown-key"),
        pytest.param("count: 1\ncolour: red\n", "colour", "not permitted", id="unknown-top-key"),
        pytest.param("devices: [{uuid: 'GPU a'}]\n", "devices.0.uuid", "letters", id="uuid-space"),
        pytest.param("devices: [{uuid: 'GPU/a'}]\n", "devices.0.uuid", "letters", id="uuid-slash"),
        pytest.param("devices: [{uuid: 'GPU-é'}]\n", "devices.0.uuid", "ASCII", id="uuid-non-ascii"),
        pytest.param(
            f"devices: [{{uuid: {'G' * 64}}}]\n", "devices.0.uuid", "at most 63", id="uuid-too-long"
        ),
        pytest.param("devices: [{index: -1}]\n", "devices.0.index", "greater than", id="negative-index"),
        pytest.param("count: -1\n", "count", "greater than", id="negative-count"),
        pytest.param("count: 1025\n", "count", "less than", id="count-too-large"),
        pytest.param("count: 2\nnuma_nodes: 0\n", "numa_nodes", "greater than", id="zero-numa-nodes"),
        pytest.param(
            "devices: [{compute_capability: nine}]\n",
            "devices.0.compute_capability",
            "pattern",
            id="bad-compute-capability",
        ),
        pytest.param("devices: 3\n", "devices", "tuple", id="devices-not-a-list"),
        pytest.param("devices: [3]\n", "devices.0", "dictionary", id="device-not-a-mapping"),
    ],
)
def test_malformed_file_is_a_config_error_naming_the_field(
    text: str, field: str, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        FakeBackend(config_path=path).discover()

    expected_field = f"{path}: {field}" if field else str(path)
    assert caught.value.field == expected_field
    assert reason in caught.value.reason
    assert str(caught.value).startswith(expected_field)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file_is_a_config_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    if kind == "directory":
        path.mkdir()

    with pytest.raises(ConfigError) as caught:
        load_fake_config(path)

    assert caught.value.field == "fake-config"
    assert f"cannot read {path}" in caught.value.reason


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({}, id="neither"), pytest.param({"count": 1, "config_path": Path("x")}, id="both")],
)
def test_backend_needs_exactly_one_source(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FakeBackend(**kwargs)  # type: ignore[arg-type]


def test_to_inventory_of_a_parsed_file_matches_the_backend(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("count: 2\nnuma_nodes: 2\n")
    assert to_inventory(load_fake_config(path)) == FakeBackend(config_path=path).discover()
