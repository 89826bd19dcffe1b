"""Whole GPUs as one resource (example.com/gpu): every device of the snapshot, as discovered."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from gpu_device_plugin.allocator import (
    AllocateOptions,
    ContainerAllocation,
    PreferredPolicy,
    container_allocation,
    topology_policy,
)
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.resources.names import DEFAULT_RESOURCE_NAME, check_resource_name


@dataclass(frozen=True)
class WholeGpuManager:
    resource_name: str = DEFAULT_RESOURCE_NAME
    allocate_options: AllocateOptions = field(default_factory=AllocateOptions)
    # Topology-aware by default: NVLink pairs first, then the nearest PCIe paths.
    preferred_policy: PreferredPolicy | None = topology_policy

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)

    def devices(self, inventory: Inventory) -> Inventory:
        # The snapshot itself: no copy, so each snapshot's render is shared as before.
        return inventory

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        return container_allocation(inventory, ids, self.allocate_options, tolerate=tolerate)
