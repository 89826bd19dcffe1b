"""A test-only resource manager: the fake GPUs whose index has one parity, as their own resource."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from gpu_device_plugin.allocator import (
    AllocateOptions,
    ContainerAllocation,
    PreferredPolicy,
    container_allocation,
    in_order_policy,
)
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.resources.manager import select_devices
from gpu_device_plugin.resources.settings import ResourceSettings

#: The resource even_and_odd keeps whatever the config says.
EVEN = "example.com/even"


@dataclass(frozen=True)
class ParityManager:
    """Test-only: the GPUs whose index has this parity, as their own resource."""

    resource_name: str
    parity: int
    allocate_options: AllocateOptions = field(default_factory=AllocateOptions)
    preferred_policy: PreferredPolicy | None = in_order_policy

    def devices(self, inventory: Inventory) -> Inventory:
        return select_devices(inventory, lambda d: d.index % 2 == self.parity)

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        return container_allocation(inventory, ids, self.allocate_options, tolerate=tolerate)


def even_and_odd(settings: ResourceSettings, inventory: Inventory) -> tuple[ParityManager, ...]:
    """A planner of two resources: the even GPUs under a fixed name (a resource no config
    changes), the odd ones under the config's resource name and Allocate options."""
    return (
        ParityManager(EVEN, 0),
        ParityManager(settings.resource_name, 1, allocate_options=settings.allocate),
    )
