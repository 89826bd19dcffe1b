"""One resource's view of the inventory cell: its manager's devices, waking only when they change.

Every plugin server follows the one SnapshotCell through a ResourceView. `value`
is the manager's view of the cell's current snapshot; `watch()` yields the view
at once and then only views that differ from the last one yielded, so a health
change of another resource's device wakes no stream of this one. An equal view
keeps the previous object, so what caches by identity (the rendered
ListAndWatch message, the kubelet view) sees "no change".

Reading `value` never lags the cell: it is computed from the cell's value on
demand (once per snapshot), not copied by a task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.resources.manager import ResourceManager


class ResourceView:
    def __init__(self, cell: SnapshotCell[Inventory], manager: ResourceManager) -> None:
        self.cell = cell
        self.manager = manager
        self._source: Inventory | None = None
        self._view: Inventory | None = None

    def of(self, inventory: Inventory) -> Inventory:
        """The manager's view of `inventory`; the previous object when it is equal to it."""
        if inventory is self._source and self._view is not None:
            return self._view
        view = self.manager.devices(inventory)
        if self._view is None or view != self._view:
            self._view = view
        self._source = inventory
        return self._view

    @property
    def value(self) -> Inventory:
        return self.of(self.cell.value)

    async def watch(self) -> AsyncIterator[Inventory]:
        """The current view at once, then each view that differs from the last one yielded."""
        last: Inventory | None = None
        async for inventory in self.cell.watch():
            view = self.of(inventory)
            if view is last:
                continue  # another resource's change: nothing new for this one's streams
            last = view
            yield view
