"""One resource's view of the inventory cell: its manager's devices, waking only when they change.

Every plugin server follows the one SnapshotCell through a ResourceView. `value`
is the manager's view of the cell's current snapshot; `watch()` yields the view
at once and then only views that differ from the last one yielded, so a health
change of another resource's device wakes no stream of this one. An equal view
keeps the previous object, so what caches by identity (the rendered
ListAndWatch message, the kubelet view) sees "no change".

The manager itself can be swapped while the view is served (a config change
that keeps the resource's name and options, issue 17): `swap()` replaces it and
wakes every stream, which then publishes the new manager's devices on the
stream the kubelet already holds. `current()` is the (manager, devices) pair an
RPC reads once and uses throughout, so a swap between two of its steps cannot
mix one manager's answer with another's devices.

Reading `value` never lags the cell: it is computed from the cell's value on
demand (once per snapshot), not copied by a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.inventory.cell import first_of
from gpu_device_plugin.resources.manager import ResourceManager


class ResourceView:
    def __init__(self, cell: SnapshotCell[Inventory], manager: ResourceManager) -> None:
        self.cell = cell
        self._manager = manager
        self._source: Inventory | None = None
        self._view: Inventory | None = None
        # Set (and replaced) by each swap: wakes streams that wait for the cell.
        self._swapped = asyncio.Event()
        self._closed = False

    @property
    def manager(self) -> ResourceManager:
        return self._manager

    def swap(self, manager: ResourceManager) -> None:
        """Serve `manager` from now on; every stream gets its devices if they differ."""
        if manager == self._manager:
            return
        self._manager = manager
        # The next read computes the new manager's view; an equal one keeps the old
        # object (of() compares), so a swap that changes only the answers sends nothing.
        self._source = None
        swapped, self._swapped = self._swapped, asyncio.Event()
        swapped.set()

    def close(self) -> None:
        """The resource is no longer served: every stream ends (its server can then stop
        without waiting out its grace for them)."""
        self._closed = True
        swapped, self._swapped = self._swapped, asyncio.Event()
        swapped.set()

    def of(self, inventory: Inventory) -> Inventory:
        """The manager's view of `inventory`; the previous object when it is equal to it."""
        if inventory is self._source and self._view is not None:
            return self._view
        view = self._manager.devices(inventory)
        if self._view is None or view != self._view:
            self._view = view
        self._source = inventory
        return self._view

    @property
    def value(self) -> Inventory:
        return self.of(self.cell.value)

    def current(self) -> tuple[ResourceManager, Inventory]:
        """The manager and its devices now: one consistent pair for one RPC."""
        return self._manager, self.value

    async def watch(self) -> AsyncIterator[Inventory]:
        """The current view at once, then each view that differs from the last one yielded."""
        last: Inventory | None = None
        while not self._closed:
            # Both events taken before reading: a publish or swap while the consumer
            # is busy with this view still wakes the next wait.
            published = self.cell.next_change()
            swapped = self._swapped
            view = self.value
            if self._closed:
                return
            if view is not last:
                last = view
                yield view
            await first_of(published, swapped)
