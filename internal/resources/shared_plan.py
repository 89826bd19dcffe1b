"""Which managers a sharing config makes of the base resources, as NVIDIA's plugin does.

For each `sharing.<strategy>.resources[i]` entry, the base resource it names
(by its resource name: whole GPUs, or a MIG profile's) has the devices the
entry selects (`devices`: all, the first N by index, or a list of indexes, MIG
indexes `<gpu>:<mig>` and UUIDs) offered `replicas` ways under the entry's
name (`rename`, `<name>.shared` with renameByDefault, or the name itself).
The base devices it does not select stay whole under the base's name: in the
same resource when the name is kept, as the base resource without the shared
ones when renamed (nothing, when every device is shared). A base no entry
names is served as it is.

The selection is resolved against the snapshot the plan is made from, so a
name, an index or a UUID that is not on this node is an error naming its key
(`sharing.timeSlicing.resources[0].devices[1]`), as is a name shared twice or
two resources ending up with one name (a MIG profile's name on a node without
it shares nothing, as with NVIDIA: the caller says which names may be absent).
Pure: equal inputs, equal managers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Device, Inventory, MigDevice
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.replicated import PartManager, ReplicatedManager
from gpu_device_plugin.resources.settings import SharedResource, Sharing


def replicate(
    bases: Sequence[ResourceManager],
    sharing: Sharing,
    policy: SharedPolicy,
    inventory: Inventory,
    *,
    may_be_absent: Callable[[str], bool] = lambda _name: False,
) -> tuple[ResourceManager, ...]:
    """The managers to serve: each base as the sharing config makes it, in the bases' order.

    `may_be_absent(name)`: a name no base has that shares nothing rather than being an
    error (a MIG profile's resource on a node without that profile).
    """
    key = sharing.strategy.config_key
    by_name = {b.resource_name: b for b in bases}
    made: dict[str, list[tuple[ResourceManager, str]]] = {}
    for position, entry in enumerate(sharing.resources):
        where = f"{key}.resources[{position}]"
        base = by_name.get(entry.name)
        if base is None and may_be_absent(entry.name):
            continue
        if base is None:
            served = ", ".join(by_name)
            raise ConfigError(
                f"{where}.name",
                f"{entry.name} is not a resource this plugin serves here (it serves {served}); the "
                "whole GPUs' name is --resource-name or resources.gpus[0].name",
            )
        if entry.name in made:
            raise ConfigError(f"{where}.name", f"{entry.name} is shared by an earlier entry already")
        made[entry.name] = _share(base, entry, sharing, policy, inventory, where)
    out = [pair for base in bases for pair in made.get(base.resource_name, [(base, "")])]
    _check_unique(out)
    return tuple(manager for manager, _ in out)


def _share(
    base: ResourceManager,
    entry: SharedResource,
    sharing: Sharing,
    policy: SharedPolicy,
    inventory: Inventory,
    where: str,
) -> list[tuple[ResourceManager, str]]:
    """This entry's managers, each with the key that named it (for a clash of names)."""
    view = base.devices(inventory)
    devices = view.devices
    chosen = _selected(devices, {m.id: m for m in view.mig_devices}, entry, f"{where}.devices")
    name = entry.offered_as(sharing.rename_by_default)
    kept = name == entry.name
    replicated = ReplicatedManager(
        base,
        entry.replicas,
        name,
        shared=chosen,
        keep_unshared=kept,
        one_per_container=sharing.fail_requests_greater_than_one,
        option=f"{sharing.strategy.config_key}.failRequestsGreaterThanOne",
        policy=policy,
    )
    named_by = f"{where}.rename" if entry.rename is not None else f"{where}.name"
    managers: list[tuple[ResourceManager, str]] = [(replicated, named_by)]
    if not kept and chosen is not None and len(chosen) < len(devices):
        # Renamed: the GPUs left whole keep the original name, as a resource of their own.
        managers.insert(0, (PartManager(base, chosen), f"{where}.name"))
    return managers


def _refs(device: Device, migs: Mapping[str, MigDevice]) -> set[str]:
    """What a `devices:` entry may call the device: its id and UUID, and its index, which for a
    MIG device is NVIDIA's `<gpu index>:<MIG index>`."""
    mig = migs.get(device.id)
    index = f"{device.index}:{mig.index}" if mig is not None else str(device.index)
    return {device.id, device.uuid, index}


def _selected(
    devices: Sequence[Device], migs: Mapping[str, MigDevice], entry: SharedResource, where: str
) -> frozenset[str] | None:
    """The base ids to replicate; None: every one (`devices: all`)."""
    spec = entry.devices
    if spec == "all":
        return None
    ordered = sorted(devices, key=lambda d: (d.index, d.id))
    if isinstance(spec, int):
        if spec > len(ordered):
            raise ConfigError(
                where, f"{spec} devices to share, but {entry.name} has {len(ordered)} on this node"
            )
        return frozenset(d.id for d in ordered[:spec])
    chosen: set[str] = set()
    refs = {d.id: _refs(d, migs) for d in ordered}
    for position, ref in enumerate(spec):
        match = next((d for d in ordered if ref in refs[d.id]), None)
        if match is None:
            indexes = ", ".join(str(d.index) for d in ordered[:8]) + (", ..." if len(ordered) > 8 else "")
            raise ConfigError(
                f"{where}[{position}]",
                f"no device {ref!r} of {entry.name} on this node (its indexes: {indexes or 'none'}; "
                "or give a UUID)",
            )
        chosen.add(match.id)
    return frozenset(chosen)


def _check_unique(managers: Sequence[tuple[ResourceManager, str]]) -> None:
    seen: dict[str, str] = {}
    for manager, key in managers:
        name = manager.resource_name
        if name in seen:
            first = f" (also by {seen[name]})" if seen[name] else " (also a resource served unshared)"
            raise ConfigError(key or seen[name], f"{name} names two resources{first}: give each its own")
        seen[name] = key
