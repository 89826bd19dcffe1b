"""Replicas of a base resource's devices: time-slicing (and, through its hook, MPS).

A ReplicatedManager wraps a base ResourceManager (whole GPUs; a MIG profile's
manager) and offers each of the base's devices `replicas` times, as
`<base id>::<n>` for n = 0 .. replicas-1, NVIDIA's annotated ids. The ids are a
function of the base id and n only, so they are the same after a restart of
either side: the kubelet checkpoints them. A replica is its base device with
only the id changed, so its health, NUMA node and index are the base's: an
unhealthy GPU takes every one of its replicas down, and back.

Devices the sharing config leaves out (`shared`) are either listed whole under
the same name (`keep_unshared`: NVIDIA's behaviour when the resource keeps its
name) or not at all (a renamed resource; plan.py serves them under the base's
name).

Allocate maps the replica ids back to base ids, each physical device once, in
the order first named (a container given two replicas of one GPU sees that GPU
once), and answers through the base manager, so NVIDIA_VISIBLE_DEVICES, device
specs and CDI names are exactly the base's. `extension` adds to that answer
what a sharing mode needs besides (MPS: its pipe directory, per-client limits);
time-slicing needs nothing. GetPreferredAllocation is the shared policies'
(allocator/shared_policy.py), exact over counts per physical device.

Pure and frozen: equal settings build equal managers (plans are diffed); the
one thing it keeps is the preferred policy's layout of the last view, a memo.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gpu_device_plugin.allocator import AllocateOptions, ContainerAllocation, PreferredPolicy
from gpu_device_plugin.allocator.shared_layout import SharedLayout, layout_from_inventory
from gpu_device_plugin.allocator.shared_policy import SharedPolicy, choose_replicas
from gpu_device_plugin.allocator.validate import check_allocatable
from gpu_device_plugin.errors import RequestError
from gpu_device_plugin.inventory import Device, Inventory
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.names import check_resource_name

# NVIDIA's separator between a device id and its replica number.
REPLICA_SEPARATOR = "::"
# Enough for any real use, and a replica id stays within the kubelet's 63 characters
# (a UUID is 40, a legacy MIG UUID at most 56).
MAX_REPLICAS = 999


def replica_id(base_id: str, number: int) -> str:
    return f"{base_id}{REPLICA_SEPARATOR}{number}"


def base_id(device_id: str) -> str:
    """The base device of a replica id; a whole device's id is its own base."""
    head, sep, number = device_id.rpartition(REPLICA_SEPARATOR)
    return head if sep and number.isdigit() else device_id


class ReplicaExtension(Protocol):
    """What a sharing mode adds to a container's answer (MPS: env, mounts, limits).

    `devices` are the base devices the container gets, each once, in order;
    `replicas` how many ways each is shared. Must be pure, and a frozen value
    (it is part of the manager's equality).
    """

    def extend(
        self, allocation: ContainerAllocation, devices: Sequence[Device], replicas: int
    ) -> ContainerAllocation: ...


@dataclass(frozen=True, eq=False)
class ViewPolicy:
    """A shared policy (allocator/shared_policy.py) over a replica view, its layout built once per view.

    The server passes the same view object until the devices change
    (resources/view.py), so the layout (which GPU each replica is on, the pair
    weights) is built once per change instead of on every request: a memo, the
    answer is the same as the policy's on a fresh layout.
    """

    policy: SharedPolicy
    # (the view, its layout): the last one asked about.
    _last: list[tuple[Inventory, SharedLayout]] = field(default_factory=list, repr=False)

    @property
    def __name__(self) -> str:
        # What spans name the policy by (server/rpc_spans.policy_name): `distributed`, `packed`.
        return f"{self.policy}_policy"

    def __call__(
        self, inventory: Inventory, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        if not self._last or self._last[0][0] is not inventory:
            self._last[:] = [(inventory, layout_from_inventory(inventory))]
        return choose_replicas(self._last[0][1], available, must_include, size, self.policy)


@dataclass(frozen=True)
class ReplicatedManager:
    base: ResourceManager
    replicas: int
    # The name the replicas are offered under: the base's, or a rename.
    resource_name: str
    # Base device ids to replicate; None: all of them (also those that appear later).
    shared: frozenset[str] | None = None
    # List the base devices not in `shared` whole, under this resource (NVIDIA does so
    # when the resource keeps its name); off: leave them out.
    keep_unshared: bool = False
    # Refuse a container request for more than one id, citing `option` (NVIDIA's key).
    one_per_container: bool = False
    option: str = "sharing.timeSlicing.failRequestsGreaterThanOne"
    policy: SharedPolicy = SharedPolicy.DISTRIBUTED
    extension: ReplicaExtension | None = None
    # The policy's callable, with its layout memo: derived from `policy`, so not compared.
    _preferred: ViewPolicy = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be between 1 and {MAX_REPLICAS}, got {self.replicas}")
        object.__setattr__(self, "_preferred", ViewPolicy(self.policy))

    @property
    def allocate_options(self) -> AllocateOptions:
        return self.base.allocate_options

    @property
    def preferred_policy(self) -> PreferredPolicy | None:
        return self._preferred

    def is_shared(self, device: Device) -> bool:
        return self.shared is None or device.id in self.shared

    def devices(self, inventory: Inventory) -> Inventory:
        out: list[Device] = []
        for device in self.base.devices(inventory).devices:
            if self.is_shared(device):
                out += [replace(device, id=replica_id(device.id, n)) for n in range(self.replicas)]
            elif self.keep_unshared:
                out.append(device)
        return replace(inventory, devices=tuple(out))

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        if not ids:
            raise RequestError("devices_ids: a container request must name at least one device")
        # Against this resource's ids first, so that every refusal names what the kubelet sent.
        check_allocatable(inventory, ids, what="devices_ids", tolerate=tolerate)
        # As NVIDIA: only a request holding a replica counts (whole unshared GPUs listed
        # under the same name may still be asked for together).
        if self.one_per_container and len(ids) > 1 and any(base_id(i) != i for i in ids):
            raise RequestError(
                f"devices_ids: {len(ids)} devices of the shared resource {self.resource_name} asked for "
                f"one container, and {self.option} allows one: request 1",
                ids,
            )
        bases = list(dict.fromkeys(base_id(i) for i in ids))
        base_view = _base_view(inventory)
        racing = {base_id(i) for i in tolerate}
        allocation = self.base.allocate(base_view, bases, tolerate=[b for b in bases if b in racing])
        if self.extension is not None:
            allocation = self.extension.extend(allocation, [base_view.by_id[b] for b in bases], self.replicas)
        return allocation


def _base_view(view: Inventory) -> Inventory:
    """The base's devices behind a replica view: each base device once, its own id back."""
    seen: dict[str, Device] = {}
    for device in view.devices:
        original = base_id(device.id)
        if original not in seen:
            seen[original] = device if device.id == original else replace(device, id=original)
    return replace(view, devices=tuple(seen.values()))


@dataclass(frozen=True)
class PartManager:
    """A base resource without some of its devices: what a renamed sharing leaves whole.

    NVIDIA keeps the GPUs a `devices:` list does not name under the original
    resource; with a rename, the replicas are another resource, and this is the
    original one, minus the shared devices.
    """

    base: ResourceManager
    excluded: frozenset[str]

    @property
    def resource_name(self) -> str:
        return self.base.resource_name

    @property
    def allocate_options(self) -> AllocateOptions:
        return self.base.allocate_options

    @property
    def preferred_policy(self) -> PreferredPolicy | None:
        return self.base.preferred_policy

    def devices(self, inventory: Inventory) -> Inventory:
        view = self.base.devices(inventory)
        return replace(view, devices=tuple(d for d in view.devices if d.id not in self.excluded))

    def allocate(
        self, inventory: Inventory, ids: Sequence[str], *, tolerate: Collection[str] = ()
    ) -> ContainerAllocation:
        return self.base.allocate(inventory, ids, tolerate=tolerate)
