"""convert.py at the protobuf level: what the kubelet decodes from our Allocate answer.

Each case is serialised to the wire bytes and parsed back as the kubelet's
message type, so a field we fill under the wrong number or name fails here.
"""

from __future__ import annotations

import pytest

from gpu_device_plugin.allocator import ContainerAllocation, DeviceNode, Mount
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.server.convert import container_allocate_response


def on_the_wire(allocation: ContainerAllocation) -> pb.ContainerAllocateResponse:
    data = container_allocate_response(allocation).SerializeToString()
    return pb.ContainerAllocateResponse.FromString(data)


def test_mounts_reach_the_kubelet_in_order_with_their_read_only_flag() -> None:
    allocation = ContainerAllocation(
        envs={"CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"},
        mounts=(
            Mount("/mps/nvidia.com/gpu/pipe", "/run/nvidia/mps/nvidia.com/gpu/pipe"),
            Mount("/dev/shm", "/run/nvidia/mps/shm", read_only=True),
        ),
    )
    message = on_the_wire(allocation)
    assert [(m.container_path, m.host_path, m.read_only) for m in message.mounts] == [
        ("/mps/nvidia.com/gpu/pipe", "/run/nvidia/mps/nvidia.com/gpu/pipe", False),
        ("/dev/shm", "/run/nvidia/mps/shm", True),
    ]
    assert dict(message.envs) == {"CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"}


def test_mounts_are_field_2_of_the_response() -> None:
    # The kubelet's api.proto: ContainerAllocateResponse.mounts = 2, Mount.{container_path,
    # host_path, read_only} = 1, 2, 3. Checked on the descriptor our stubs were built from.
    response = pb.ContainerAllocateResponse.DESCRIPTOR
    assert response.fields_by_name["mounts"].number == 2
    mount = pb.Mount.DESCRIPTOR
    assert [(f.name, f.number) for f in mount.fields] == [
        ("container_path", 1),
        ("host_path", 2),
        ("read_only", 3),
    ]


@pytest.mark.parametrize(
    ("allocation", "fields"),
    [
        pytest.param(ContainerAllocation(envs={"NVIDIA_VISIBLE_DEVICES": "GPU-a"}), {"envs"}, id="envs-only"),
        pytest.param(
            ContainerAllocation(envs={}, device_nodes=(DeviceNode("/dev/nvidia0"),)), {"devices"}, id="nodes"
        ),
        pytest.param(ContainerAllocation(envs={}, mounts=(Mount("/a", "/b"),)), {"mounts"}, id="mounts"),
        pytest.param(ContainerAllocation(envs={}, cdi_devices=("k/c=x",)), {"cdi_devices"}, id="cdi"),
    ],
)
def test_only_what_the_allocation_holds_is_sent(allocation: ContainerAllocation, fields: set[str]) -> None:
    message = on_the_wire(allocation)
    assert {f.name for f, _ in message.ListFields()} == fields
