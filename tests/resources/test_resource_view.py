"""A resource's view of the inventory cell: its devices now, and a stream that wakes on its changes only."""

from __future__ import annotations

import asyncio

import pytest

from gpu_device_plugin.allocator import AllocateOptions, in_order_policy
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from gpu_device_plugin.resources.manager import select_devices
from gpu_device_plugin.resources.view import ResourceView
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager


def inventory(*unhealthy: int) -> Inventory:
    devices = tuple(
        Device(
            id=f"GPU-{i}",
            index=i,
            uuid=f"GPU-{i}",
            health=Health.UNHEALTHY if i in unhealthy else Health.HEALTHY,
        )
        for i in range(4)
    )
    return Inventory(devices=devices, backend="fake")


class FirstTwo(WholeGpuManager):
    """GPUs 0 and 1 only."""

    def devices(self, inventory: Inventory) -> Inventory:
        return select_devices(inventory, lambda d: d.index < 2)


def test_the_whole_gpu_manager_shows_the_snapshot_itself() -> None:
    snapshot = inventory()
    assert WholeGpuManager().devices(snapshot) is snapshot


def test_a_resource_name_the_kubelet_would_refuse_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="resource-name"):
        WholeGpuManager("no-slash", AllocateOptions(), in_order_policy)


def test_the_view_never_lags_the_cell_and_keeps_its_object_when_unchanged() -> None:
    cell = SnapshotCell(inventory())
    view = ResourceView(cell, FirstTwo())
    first = view.value
    assert [d.id for d in first.devices] == ["GPU-0", "GPU-1"]
    cell.publish(inventory(3))  # not this resource's device
    assert view.value is first
    cell.publish(inventory(1))
    assert [d.health for d in view.value.devices] == [Health.HEALTHY, Health.UNHEALTHY]


async def test_watch_yields_only_views_that_changed() -> None:
    cell = SnapshotCell(inventory())
    view = ResourceView(cell, FirstTwo())
    seen: list[Inventory] = []
    changed = asyncio.Event()

    async def follow() -> None:
        async for value in view.watch():
            seen.append(value)
            changed.set()

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(changed.wait(), 5)
        for snapshot in (inventory(2), inventory(2, 3), inventory(0, 2, 3)):
            changed.clear()
            cell.publish(snapshot)
        await asyncio.wait_for(changed.wait(), 5)
        # Two views: the first, then GPU 0's change; GPUs 2 and 3 woke nothing.
        assert [[d.healthy for d in v.devices] for v in seen] == [[True, True], [False, True]]
    finally:
        task.cancel()
