"""The ResourceManager: what one extended resource is, read from the one inventory snapshot.

The daemon serves one plugin server per manager (its own socket, registration
and kubelet-restart watch). Every manager reads the same SnapshotCell; what
makes a resource is which devices of the snapshot it shows (ids, health, NUMA),
how it answers Allocate for them, and which preferred policy it offers. MIG
profiles, renamed shared resources and time-sliced replicas are more managers,
never special cases in the server.

A manager is pure: no I/O, no clock, no state that changes after start.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Protocol

from gpu_device_plugin.allocator import AllocateOptions, ContainerAllocation, PreferredPolicy
from gpu_device_plugin.inventory import Device, Inventory


class ResourceManager(Protocol):
    @property
    def resource_name(self) -> str:
        """The extended resource the kubelet sees, <domain>/<name>."""
        ...

    @property
    def allocate_options(self) -> AllocateOptions:
        """How Allocate names the devices to the runtime (id and list strategy, device specs, CDI)."""
        ...

    @property
    def preferred_policy(self) -> PreferredPolicy | None:
        """The GetPreferredAllocation policy; None: not offered (the options say so)."""
        ...

    def devices(self, inventory: Inventory) -> Inventory:
        """This resource's devices in the snapshot, node-wide facts kept.

        Equal snapshots of this resource must give equal views: a change to
        another resource's devices then leaves this one's streams asleep.
        """
        ...

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        """One container's answer for `ids` of this resource's view (`inventory`); RequestError
        for ids that are not this resource's, or unhealthy ones outside `tolerate`."""
        ...


def select_devices(inventory: Inventory, keep: Callable[[Device], bool]) -> Inventory:
    """The snapshot with only the devices `keep` accepts: a view for a manager that serves a part."""
    return replace(inventory, devices=tuple(d for d in inventory.devices if keep(d)))
