"""Domain values to protobuf messages and back; nothing else."""

from __future__ import annotations

from gpu_device_plugin.allocator import ContainerAllocation
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.inventory import Device, Inventory


def device_message(device: Device) -> pb.Device:
    message = pb.Device(ID=device.id, health=device.health.value)
    if device.numa_node is not None:
        message.topology.nodes.add(ID=device.numa_node)
    return message


def list_and_watch_response(inventory: Inventory) -> pb.ListAndWatchResponse:
    return pb.ListAndWatchResponse(devices=[device_message(d) for d in inventory.devices])


def container_allocate_response(allocation: ContainerAllocation) -> pb.ContainerAllocateResponse:
    return pb.ContainerAllocateResponse(
        envs=allocation.envs,
        devices=[
            pb.DeviceSpec(container_path=n.path, host_path=n.host, permissions=n.permissions)
            for n in allocation.device_nodes
        ],
        mounts=[
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in allocation.mounts
        ],
        cdi_devices=[pb.CDIDevice(name=name) for name in allocation.cdi_devices],
    )
