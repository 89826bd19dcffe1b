"""What a container gets for its devices: env vars, device nodes, mounts, CDI names.

The result is a plain value; the server turns it into protobuf.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from gpu_device_plugin.allocator.validate import check_allocatable
from gpu_device_plugin.errors import ConfigError, RequestError
from gpu_device_plugin.inventory import Device, Inventory

VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"


class DeviceIdStrategy(enum.StrEnum):
    """How devices are named to the container runtime."""

    UUID = "uuid"
    INDEX = "index"


class DeviceListStrategy(enum.StrEnum):
    """How the device list reaches the container runtime."""

    ENVVAR = "envvar"  # NVIDIA_VISIBLE_DEVICES, read by the NVIDIA container toolkit
    CDI_CRI = "cdi-cri"  # CDI device names in the CRI request, resolved by the runtime


@dataclass(frozen=True, slots=True)
class AllocateOptions:
    id_strategy: DeviceIdStrategy = DeviceIdStrategy.UUID
    list_strategy: DeviceListStrategy = DeviceListStrategy.ENVVAR
    pass_device_specs: bool = False
    # CDI kind for cdi-cri names: "<vendor>/<class>", e.g. nvidia.com/gpu.
    cdi_kind: str = "nvidia.com/gpu"

    def __post_init__(self) -> None:
        if "=" in self.cdi_kind or "/" not in self.cdi_kind:
            raise ConfigError("cdi-kind", f"{self.cdi_kind!r} must be <vendor>/<class>")


@dataclass(frozen=True, slots=True)
class DeviceNode:
    path: str
    permissions: str = "rw"
    # Where the node is on the host, when not at `path` (a driver root's dev folder).
    host_path: str = ""

    @property
    def host(self) -> str:
        return self.host_path or self.path


@dataclass(frozen=True, slots=True)
class Mount:
    """A host folder or file the container gets at `container_path` (the kubelet's Mount)."""

    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerAllocation:
    envs: dict[str, str]
    device_nodes: tuple[DeviceNode, ...] = ()
    cdi_devices: tuple[str, ...] = ()
    # Host paths bind-mounted into the container (MPS: the daemon's pipe folder and shm).
    mounts: tuple[Mount, ...] = ()
    # The devices as the container names them (NVIDIA_VISIBLE_DEVICES entries, or the
    # CDI names): the same facts as envs / cdi_devices, listed for traces, so not compared.
    container_devices: tuple[str, ...] = field(default=(), compare=False)


def container_allocation(
    inventory: Inventory,
    ids: Sequence[str],
    options: AllocateOptions,
    *,
    tolerate: Collection[str] = (),
    index_of: Callable[[Device], str] | None = None,
) -> ContainerAllocation:
    """The container's answer. `tolerate`: unhealthy devices to hand out all the same
    (the server's call: a health race the kubelet could not have seen). `index_of`: a
    device's name under the index strategy (default its index; a MIG device's is
    `<gpu>:<mig>`)."""
    if not ids:
        raise RequestError("devices_ids: a container request must name at least one device")
    check_allocatable(inventory, ids, what="devices_ids", tolerate=tolerate)
    devices = [inventory.by_id[i] for i in ids]
    envs: dict[str, str] = {}
    cdi: tuple[str, ...] = ()
    if options.list_strategy is DeviceListStrategy.ENVVAR:
        names = (
            [d.uuid for d in devices]
            if options.id_strategy is DeviceIdStrategy.UUID
            else [index_of(d) if index_of is not None else str(d.index) for d in devices]
        )
        envs[VISIBLE_DEVICES_ENV] = ",".join(names)
        named = tuple(names)
    else:
        cdi = named = tuple(f"{options.cdi_kind}={d.uuid}" for d in devices)
    nodes: tuple[DeviceNode, ...] = ()
    if options.pass_device_specs:
        # Each node once: two MIG devices of one GPU both name its /dev/nvidia<m>.
        listed = [p for d in devices for p in d.device_nodes] + list(inventory.control_nodes)
        paths = list(dict.fromkeys(listed))
        nodes = tuple(
            DeviceNode(p, host_path="" if inventory.host_path(p) == p else inventory.host_path(p))
            for p in paths
        )
    return ContainerAllocation(envs=envs, device_nodes=nodes, cdi_devices=cdi, container_devices=named)
