"""MIG devices as resources: NVIDIA's `single` and `mixed` strategies, in managers.

A MIG resource's view of the snapshot (`instance_view`) lists MIG devices as
Devices: id and UUID the MIG UUID, the parent GPU's index, NUMA node, PCI bus
and health (MIG devices have no health of their own here: an XID on the parent
takes all its instances down, and its recovery brings them back), and as
device nodes the parent's `/dev/nvidia<m>` followed by the instance's
`/dev/nvidia-caps/nvidia-cap<N>` nodes. The view keeps the instances'
MigDevice entries and their parents (Inventory.parents), which the preferred
policy and the index names read.

- `MigProfileManager`: the MIG devices of one profile (`mixed`: one per profile,
  `<domain>/mig-<profile>`, a `+` written `.` as NVIDIA does; none for a compute
  instance smaller than its GPU instance, as NVIDIA has none).
- `SingleMigManager`: every MIG device, under the whole-GPU name (`single`).
- `check_single(inventory)`: NVIDIA's rules for `single`, as a ConfigError that
  names the GPU that breaks them.
- `RefusedManager`: the resource name with no devices (a layout `single`
  cannot serve, with --no-fail-on-init-error).

Managers are frozen dataclasses with no state: equal settings and an equal
layout plan equal managers (issue 17 diffs plans). Pure: no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

from gpu_device_plugin.allocator import (
    AllocateOptions,
    ContainerAllocation,
    PreferredPolicy,
    container_allocation,
)
from gpu_device_plugin.allocator.shared_layout import layout_from_inventory
from gpu_device_plugin.allocator.shared_policy import SharedPolicy, choose_replicas
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Device, Inventory, MigDevice, MigProfile
from gpu_device_plugin.resources.names import check_resource_name

MIG_PREFIX = "mig-"


def mig_enabled(device: Device) -> bool:
    """MIG mode on now (NVIDIA's migEnabled): its MIG devices, not the GPU, are what can be used."""
    return device.mig_mode is not None and device.mig_mode.current


def mig_resource_name(resource_name: str, profile: str) -> str:
    """`<domain of resource_name>/mig-<profile>`, e.g. nvidia.com/mig-1g.10gb; a `+` becomes `.`
    (nvidia.com/mig-1g.10gb.me), as NVIDIA names it: a resource name cannot hold a `+`."""
    domain = resource_name.partition("/")[0]
    return check_resource_name(f"{domain}/{MIG_PREFIX}{profile.replace('+', '.')}")


def servable(profile: MigProfile) -> bool:
    """Whether `mixed` has a resource for the profile: NVIDIA's has none for a compute instance
    smaller than its GPU instance (`1c.3g.40gb`), and neither has this plugin."""
    return profile.ci_slices == profile.gi_slices


def instance_device(mig: MigDevice, parent: Device) -> Device:
    """A MIG device as the kubelet sees it: its UUID, its parent's placement and health."""
    return Device(
        id=mig.id,
        index=parent.index,
        uuid=mig.uuid,
        model=f"{parent.model} MIG {mig.profile.name}",
        memory_mib=mig.profile.memory_mib,
        minor=parent.minor,
        pci_bus_id=parent.pci_bus_id,
        numa_node=parent.numa_node,
        compute_capability=parent.compute_capability,
        health=parent.health,
        health_reason=parent.health_reason,
        device_nodes=parent.device_nodes + mig.device_nodes,
    )


def instance_view(inventory: Inventory, keep: Callable[[MigDevice], bool]) -> Inventory:
    """The MIG devices `keep` accepts, as Devices (by parent index, then MIG index), node-wide facts kept."""
    by_id = inventory.by_id
    chosen = [m for m in inventory.mig_devices if keep(m) and m.parent_id in by_id]
    chosen.sort(key=lambda m: (by_id[m.parent_id].index, m.index))
    parents = {m.parent_id: by_id[m.parent_id] for m in chosen}
    return replace(
        inventory,
        devices=tuple(instance_device(m, by_id[m.parent_id]) for m in chosen),
        mig_devices=tuple(chosen),
        parents=tuple(sorted(parents.values(), key=lambda d: (d.index, d.id))),
    )


def mig_allocation(
    view: Inventory, ids: Sequence[str], options: AllocateOptions, *, tolerate: Collection[str] = ()
) -> ContainerAllocation:
    """Allocate for MIG devices of `view`: MIG UUIDs, or `<gpu>:<mig>` under the index strategy."""
    index = {m.id: m.index for m in view.mig_devices}
    return container_allocation(
        view, ids, options, tolerate=tolerate, index_of=lambda d: f"{d.index}:{index[d.id]}"
    )


@dataclass(frozen=True)
class MigPolicy:
    """GetPreferredAllocation over MIG devices: each a replica of its parent (allocator/shared_policy.py)."""

    policy: SharedPolicy = SharedPolicy.DISTRIBUTED

    def __call__(
        self, inventory: Inventory, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        parent_uuid = {p.id: p.uuid for p in inventory.parents}
        parent_of = {m.id: parent_uuid[m.parent_id] for m in inventory.mig_devices}
        layout = layout_from_inventory(
            inventory, parent_of=lambda d: parent_of[d.id], parents=inventory.parents
        )
        return choose_replicas(layout, available, must_include, size, self.policy)


@dataclass(frozen=True)
class MigProfileManager:
    """`mixed`: the MIG devices of one profile, as `<domain>/mig-<profile>`."""

    resource_name: str
    profile: str
    allocate_options: AllocateOptions = field(default_factory=AllocateOptions)
    preferred_policy: PreferredPolicy | None = field(default_factory=MigPolicy)

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)

    def devices(self, inventory: Inventory) -> Inventory:
        return instance_view(inventory, lambda m: m.profile.name == self.profile)

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        return mig_allocation(inventory, ids, self.allocate_options, tolerate=tolerate)


@dataclass(frozen=True)
class SingleMigManager:
    """`single`: every MIG device (all of one profile: check_single), under the whole-GPU name."""

    resource_name: str
    allocate_options: AllocateOptions = field(default_factory=AllocateOptions)
    preferred_policy: PreferredPolicy | None = field(default_factory=MigPolicy)

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)

    def devices(self, inventory: Inventory) -> Inventory:
        try:
            check_single(inventory)
        except ConfigError:
            # Re-partitioned under the plugin into a layout `single` cannot serve: none of
            # it, never two profiles under one name (the replan's warning says why).
            return replace(inventory, devices=(), mig_devices=(), parents=())
        return instance_view(inventory, lambda m: True)

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        return mig_allocation(inventory, ids, self.allocate_options, tolerate=tolerate)


@dataclass(frozen=True)
class NonMigGpuManager:
    """`mixed`: the whole GPUs without MIG mode on, under the whole-GPU name."""

    resource_name: str
    allocate_options: AllocateOptions = field(default_factory=AllocateOptions)
    preferred_policy: PreferredPolicy | None = None

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)

    def devices(self, inventory: Inventory) -> Inventory:
        # Without the MIG devices: a MIG layout change is no change of this resource.
        return replace(
            inventory, devices=tuple(d for d in inventory.devices if not mig_enabled(d)), mig_devices=()
        )

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        return container_allocation(inventory, ids, self.allocate_options, tolerate=tolerate)


@dataclass(frozen=True)
class RefusedManager:
    """A resource served with no devices, and why (the ERROR line said it at start)."""

    resource_name: str
    reason: str
    allocate_options: AllocateOptions = field(default_factory=AllocateOptions)
    preferred_policy: PreferredPolicy | None = None

    def devices(self, inventory: Inventory) -> Inventory:
        return replace(inventory, devices=(), mig_devices=(), parents=())

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        # The view has no devices: every id is unknown, and the error says so.
        return container_allocation(inventory, ids, self.allocate_options, tolerate=tolerate)


def profiles_present(inventory: Inventory) -> tuple[str, ...]:
    """The MIG profiles of the snapshot's MIG devices, sorted (mixed serves one resource each)."""
    by_id = inventory.by_id
    return tuple(
        sorted(
            {m.profile.name for m in inventory.mig_devices if m.parent_id in by_id and servable(m.profile)}
        )
    )


def check_single(inventory: Inventory) -> bool:
    """NVIDIA's rules for `single`; True when MIG devices are to be served, False when no GPU has
    MIG on (NVIDIA then serves whole GPUs). ConfigError naming the GPU that breaks a rule:
    every GPU MIG-enabled, each with MIG devices, all of one profile."""
    enabled = [d for d in inventory.devices if mig_enabled(d)]
    if not enabled:
        return False
    profiles: dict[str, list[str]] = {d.id: [] for d in enabled}
    for mig in inventory.mig_devices:
        if mig.parent_id in profiles:
            profiles[mig.parent_id].append(mig.profile.name)
    first = enabled[0]
    for device in inventory.devices:
        if not mig_enabled(device):
            raise ConfigError(
                "mig-strategy",
                f"single needs MIG on every GPU: {_gpu(device)} has MIG mode "
                f"{device.mig_mode.label if device.mig_mode else 'n/a'} while {_gpu(first)} has it on",
            )
    for device in enabled:
        if not profiles[device.id]:
            raise ConfigError("mig-strategy", f"single: {_gpu(device)} has MIG mode on but no MIG devices")
    want = profiles[first.id][0]
    for device in enabled:
        other = sorted(set(profiles[device.id]) - {want})
        if other:
            raise ConfigError(
                "mig-strategy",
                f"single needs one MIG profile on every GPU: {_gpu(device)} has {', '.join(other)} "
                f"where {_gpu(first)} has {want} (--mig-strategy mixed serves each profile)",
            )
    return True


def mig_notes(inventory: Inventory, *, whole: bool, resource_name: str) -> tuple[str, ...]:
    """Warnings for the start-up log: MIG GPUs served whole (`whole`, strategy none), or
    MIG-enabled GPUs with no MIG devices (nothing of them is served)."""
    notes: list[str] = []
    count = {d.id: 0 for d in inventory.devices}
    for mig in inventory.mig_devices:
        if mig.parent_id in count:
            count[mig.parent_id] += 1
    for device in inventory.devices:
        mode = device.mig_mode
        if whole and mode is not None and (mode.current or mode.pending):
            notes.append(
                f"{_gpu(device)} has MIG mode {mode.label}: it is served as a whole GPU under "
                f"{resource_name} (--mig-strategy none), its MIG devices are not"
            )
        elif not whole and mig_enabled(device) and not count[device.id]:
            notes.append(f"{_gpu(device)} has MIG mode on but no MIG devices: nothing of it is served")
    if not whole:
        by_id = inventory.by_id
        for mig in inventory.mig_devices:
            if mig.parent_id in by_id and not servable(mig.profile):
                notes.append(
                    f"MIG device {mig.uuid} of {_gpu(by_id[mig.parent_id])} has profile {mig.profile.name}, "
                    "a compute instance smaller than its GPU instance: not served (as with NVIDIA's plugin)"
                )
    return tuple(notes)


def _gpu(device: Device) -> str:
    return f"GPU {device.index} ({device.uuid})"
