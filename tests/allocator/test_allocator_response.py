"""What a container gets: NVIDIA_VISIBLE_DEVICES, CDI names, device nodes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpu_device_plugin.allocator import (
    AllocateOptions,
    ContainerAllocation,
    DeviceIdStrategy,
    DeviceListStrategy,
    DeviceNode,
    container_allocation,
)
from gpu_device_plugin.errors import DeviceUnavailableError, RequestError
from gpu_device_plugin.inventory import Device, Health, Inventory

UUIDS = [f"GPU-{n}{n}{n}{n}aaaa-bbbb-cccc-dddd-eeeeeeeeeeee" for n in range(4)]
CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def inventory() -> Inventory:
    return Inventory(
        devices=tuple(
            Device(
                id=UUIDS[i],
                index=i,
                uuid=UUIDS[i],
                minor=i + 4,
                device_nodes=(f"/dev/nvidia{i + 4}",),
                health=Health.UNHEALTHY if i == 3 else Health.HEALTHY,
            )
            for i in range(4)
        ),
        backend="fake",
        control_nodes=CONTROL,
    )


@pytest.mark.parametrize(
    ("ids", "options", "expected"),
    [
        pytest.param(
            [UUIDS[0]],
            AllocateOptions(),
            ContainerAllocation(envs={"NVIDIA_VISIBLE_DEVICES": UUIDS[0]}),
            id="envvar-uuid-one",
        ),
        pytest.param(
            [UUIDS[2], UUIDS[0]],
            AllocateOptions(id_strategy=DeviceIdStrategy.UUID),
            ContainerAllocation(envs={"NVIDIA_VISIBLE_DEVICES": f"{UUIDS[2]},{UUIDS[0]}"}),
            id="envvar-uuid-two-in-request-order",
        ),
        pytest.param(
            [UUIDS[2], UUIDS[0]],
            AllocateOptions(id_strategy=DeviceIdStrategy.INDEX),
            ContainerAllocation(envs={"NVIDIA_VISIBLE_DEVICES": "2,0"}),
            id="envvar-index",
        ),
        pytest.param(
            [UUIDS[0], UUIDS[1]],
            AllocateOptions(list_strategy=DeviceListStrategy.CDI_CRI),
            ContainerAllocation(
                envs={}, cdi_devices=(f"nvidia.com/gpu={UUIDS[0]}", f"nvidia.com/gpu={UUIDS[1]}")
            ),
            id="cdi-cri-no-env-var",
        ),
        pytest.param(
            [UUIDS[1]],
            AllocateOptions(
                list_strategy=DeviceListStrategy.CDI_CRI,
                id_strategy=DeviceIdStrategy.INDEX,
                cdi_kind="example.com/gpu",
            ),
            ContainerAllocation(envs={}, cdi_devices=(f"example.com/gpu={UUIDS[1]}",)),
            id="cdi-cri-custom-kind-always-uuid",
        ),
        pytest.param(
            [UUIDS[1], UUIDS[0]],
            AllocateOptions(pass_device_specs=True),
            ContainerAllocation(
                envs={"NVIDIA_VISIBLE_DEVICES": f"{UUIDS[1]},{UUIDS[0]}"},
                device_nodes=(
                    DeviceNode("/dev/nvidia5", "rw"),
                    DeviceNode("/dev/nvidia4", "rw"),
                    DeviceNode("/dev/nvidiactl", "rw"),
                    DeviceNode("/dev/nvidia-uvm", "rw"),
                    DeviceNode("/dev/nvidia-uvm-tools", "rw"),
                ),
            ),
            id="pass-device-specs-gpu-then-control-nodes",
        ),
    ],
)
def test_container_allocation(
    ids: list[str], options: AllocateOptions, expected: ContainerAllocation
) -> None:
    assert container_allocation(inventory(), ids, options) == expected


def test_device_specs_are_not_passed_by_default() -> None:
    allocation = container_allocation(inventory(), [UUIDS[0]], AllocateOptions())
    assert allocation.device_nodes == ()
    assert allocation.cdi_devices == ()


@pytest.mark.parametrize(
    ("ids", "error", "phrase"),
    [
        pytest.param([], RequestError, "at least one device", id="empty"),
        pytest.param(["GPU-nope"], RequestError, "'GPU-nope'", id="unknown"),
        pytest.param([UUIDS[0], UUIDS[0]], RequestError, "more than once", id="duplicate"),
        pytest.param([UUIDS[3]], DeviceUnavailableError, repr(UUIDS[3]), id="unhealthy"),
    ],
)
def test_bad_requests_are_refused(ids: list[str], error: type[RequestError], phrase: str) -> None:
    with pytest.raises(RequestError) as caught:
        container_allocation(inventory(), ids, AllocateOptions(pass_device_specs=True))
    assert type(caught.value) is error
    assert str(caught.value).startswith("devices_ids: ")
    assert phrase in str(caught.value)


def test_device_specs_under_a_driver_root_name_the_host_path_and_the_usual_container_path() -> None:
    rooted = replace(inventory(), dev_root="/run/nvidia/driver/dev")
    allocation = container_allocation(rooted, [UUIDS[1]], AllocateOptions(pass_device_specs=True))
    assert [(n.path, n.host) for n in allocation.device_nodes] == [
        ("/dev/nvidia5", "/run/nvidia/driver/dev/nvidia5"),
        ("/dev/nvidiactl", "/run/nvidia/driver/dev/nvidiactl"),
        ("/dev/nvidia-uvm", "/run/nvidia/driver/dev/nvidia-uvm"),
        ("/dev/nvidia-uvm-tools", "/run/nvidia/driver/dev/nvidia-uvm-tools"),
    ]
