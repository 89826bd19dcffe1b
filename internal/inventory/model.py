"""Immutable snapshot of the devices on this node.

Discovery builds it, health publishes changed copies of it, the allocator and
the server read it. Nothing here performs I/O, and nothing here is ever mutated:
a change is a new Inventory.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from gpu_device_plugin.inventory.topology import Topology


class Health(enum.StrEnum):
    # Values are the kubelet's wire strings.
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


@dataclass(frozen=True, slots=True)
class MigMode:
    """A GPU's MIG mode now, and the one it takes at its next reset (NVML's current / pending)."""

    current: bool
    pending: bool

    @property
    def label(self) -> str:
        if self.current == self.pending:
            return "enabled" if self.current else "disabled"
        return "disable pending" if self.current else "enable pending"


@dataclass(frozen=True, slots=True)
class Device:
    """One GPU as the plugin advertises it.

    `id` is what the kubelet sees and checkpoints: it must be stable across
    restarts of either side and at most 63 characters, so it is the GPU's UUID.
    """

    id: str
    index: int
    uuid: str
    model: str = "unknown"
    memory_mib: int = 0
    minor: int | None = None
    pci_bus_id: str | None = None
    numa_node: int | None = None
    compute_capability: tuple[int, int] | None = None
    health: Health = Health.HEALTHY
    # Why the device is unhealthy (empty when healthy): surfaced in logs and probes.
    health_reason: str = ""
    # Per-GPU device nodes as the container sees them, e.g. ("/dev/nvidia3",); only
    # nodes that exist. Inventory.host_path says where each is on the host.
    device_nodes: tuple[str, ...] = ()
    # Whether the GPU can be split into MIG instances; None: nobody could tell.
    mig_capable: bool | None = None
    # MIG mode (current and pending); None: not MIG capable, or unknown.
    mig_mode: MigMode | None = None

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY


@dataclass(frozen=True, slots=True)
class MigProfile:
    """What one kind of MIG instance is: NVIDIA's profile name and the slices and engines it holds.

    `name` is the form NVIDIA's resource names and labels use: "1g.10gb", "3g.40gb",
    and the variants with extra engines as their own profiles ("1g.10gb+me"). The
    counts are what NVML's GPU instance profile info reports; None: not read.
    """

    name: str
    gi_slices: int
    ci_slices: int
    memory_mib: int = 0
    multiprocessors: int | None = None
    copy_engines: int | None = None
    decoders: int | None = None
    encoders: int | None = None
    jpeg_engines: int | None = None
    ofa_engines: int | None = None


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG device (a GPU instance and one compute instance on it) of a MIG-enabled GPU.

    Discovered, never derived: its health is its parent's (the manager reads the
    parent Device), so health publishes GPUs only. `id` is its MIG UUID, what the
    kubelet checkpoints; it stays the same while the instance exists.
    """

    id: str
    uuid: str
    # The parent GPU's Device.id.
    parent_id: str
    # Its MIG device index on the parent (nvmlDeviceGetMigDeviceHandleByIndex).
    index: int
    profile: MigProfile
    gi_id: int
    ci_id: int
    # /dev/nvidia-caps/nvidia-cap<N> for its GI and CI access, as the container sees them
    # (Inventory.host_path says where on the host); the parent's /dev/nvidia<m> is not here.
    device_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A device's health before and after a new snapshot replaced the old one."""

    device_id: str
    before: Health
    after: Health
    reason: str


@dataclass(frozen=True)
class Inventory:
    """All devices of one resource, ordered by index, plus node-wide facts."""

    devices: tuple[Device, ...]
    backend: str
    driver_version: str | None = None
    cuda_version: str | None = None
    # Node-wide device nodes every GPU container needs (/dev/nvidiactl, ...),
    # only those that exist on this host.
    control_nodes: tuple[str, ...] = ()
    # Where the /dev nodes named above are on the host: /dev, or the driver
    # root's dev folder (backends/nvml/driver_root.py).
    dev_root: str = "/dev"
    # GPUs the driver counts but that could not even be identified (no UUID, so
    # no id to advertise them under), by index, with why: shown, never served.
    unidentified: tuple[tuple[int, str], ...] = ()
    # How the GPUs are linked to each other; None when nobody could tell.
    topology: Topology | None = None
    # The MIG devices of the MIG-enabled GPUs among `devices`, by parent index then
    # MIG index; empty when no GPU has MIG on (or the backend cannot see them).
    mig_devices: tuple[MigDevice, ...] = ()
    # In a MIG resource's view (resources/mig.py), whose `devices` are MIG instances: the
    # GPUs they are on, whose links, NUMA nodes and health are the instances'. Empty otherwise.
    parents: tuple[Device, ...] = ()
    # Not part of equality: a cache derived from `devices`.
    _by_id: Mapping[str, Device] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {d.id: d for d in self.devices})

    @property
    def by_id(self) -> Mapping[str, Device]:
        return self._by_id

    def host_path(self, node: str) -> str:
        """The host path of a device node named here by its container path (/dev/...)."""
        if self.dev_root == "/dev" or not node.startswith("/dev/"):
            return node
        return self.dev_root.rstrip("/") + node.removeprefix("/dev")

    @cached_property
    def healthy_count(self) -> int:
        return sum(1 for d in self.devices if d.healthy)

    def with_health(self, updates: Mapping[str, tuple[Health, str]]) -> Inventory:
        """A copy with the named devices' health replaced; unknown ids are ignored."""
        devices = tuple(
            replace(d, health=updates[d.id][0], health_reason=updates[d.id][1]) if d.id in updates else d
            for d in self.devices
        )
        return replace(self, devices=devices)

    def health_changes(self, newer: Inventory) -> list[HealthChange]:
        """Devices whose health differs in `newer` (devices in both snapshots only)."""
        return [
            HealthChange(d.id, self._by_id[d.id].health, d.health, d.health_reason)
            for d in newer.devices
            if d.id in self._by_id and self._by_id[d.id].health is not d.health
        ]


def sorted_devices(devices: Iterable[Device]) -> tuple[Device, ...]:
    return tuple(sorted(devices, key=lambda d: (d.index, d.id)))
