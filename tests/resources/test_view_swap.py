"""Swapping a served manager: streams publish the new devices, in-flight readers keep one pair."""

from __future__ import annotations

import asyncio

from gpu_device_plugin.inventory import Device, Inventory, SnapshotCell
from gpu_device_plugin.resources.manager import select_devices
from gpu_device_plugin.resources.view import ResourceView
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager


def inventory() -> Inventory:
    return Inventory(
        devices=tuple(Device(id=f"GPU-{i}", index=i, uuid=f"GPU-{i}") for i in range(4)), backend="fake"
    )


class FirstTwo(WholeGpuManager):
    def devices(self, inventory: Inventory) -> Inventory:
        return select_devices(inventory, lambda d: d.index < 2)


async def test_a_swap_wakes_the_stream_with_the_new_managers_devices() -> None:
    view = ResourceView(SnapshotCell(inventory()), WholeGpuManager())
    stream = view.watch()
    first = await anext(stream)
    assert len(first.devices) == 4
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not waiting.done()
    view.swap(FirstTwo())
    second = await asyncio.wait_for(waiting, 2)
    assert [d.id for d in second.devices] == ["GPU-0", "GPU-1"]
    await stream.aclose()


async def test_a_swap_that_shows_the_same_devices_sends_nothing_new() -> None:
    cell = SnapshotCell(inventory())
    view = ResourceView(cell, WholeGpuManager())
    stream = view.watch()
    first = await anext(stream)
    waiting = asyncio.ensure_future(anext(stream))
    view.swap(WholeGpuManager(preferred_policy=None))  # other answers, same devices
    assert view.value is first
    # The stream's next message is the next real change: the swap itself sent nothing.
    cell.publish(Inventory(devices=inventory().devices[:3], backend="fake"))
    assert len((await asyncio.wait_for(waiting, 2)).devices) == 3
    await stream.aclose()


def test_current_is_one_consistent_pair() -> None:
    view = ResourceView(SnapshotCell(inventory()), WholeGpuManager())
    manager, devices = view.current()
    view.swap(FirstTwo())
    # What a reader took before the swap is unchanged by it; the next read is the new pair.
    assert manager == WholeGpuManager()
    assert len(devices.devices) == 4
    after, now = view.current()
    assert isinstance(after, FirstTwo)
    assert len(now.devices) == 2


async def test_close_ends_every_stream() -> None:
    view = ResourceView(SnapshotCell(inventory()), WholeGpuManager())
    stream = view.watch()
    await anext(stream)
    waiting = asyncio.ensure_future(anext(stream))
    view.close()
    try:
        await asyncio.wait_for(waiting, 2)
    except StopAsyncIteration:
        return
    raise AssertionError("the stream went on after close()")
