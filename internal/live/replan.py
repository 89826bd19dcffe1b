"""One config for the daemon's life, and still a MIG layout changed under it is followed.

With --config-dir the reconciler replans on a change of the inventory's shape
among its other triggers. A daemon given one config (flags, --config-file) has no
reconciler, and re-discovery (or the fake backend's file) can still change which
devices exist: the same settings are planned on the new inventory and applied as
a diff by the fleet, so a resource whose devices did not change keeps its server,
socket and registration, a profile that appeared registers, and one that is gone
stops serving. A layout the settings cannot serve (`single` on a mixed layout) is
a warning and keeps the last plan, whose `single` resource then lists none of its
devices (resources/mig.py) until the layout is uniform again.
"""

from __future__ import annotations

import logging

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.live.reconciler import Planner, shape_changes
from gpu_device_plugin.resources.settings import ResourceSettings
from gpu_device_plugin.server.fleet import ResourceFleet

log = logging.getLogger(__name__)


async def replan_on_shape(
    cell: SnapshotCell[Inventory], fleet: ResourceFleet, settings: ResourceSettings, plan: Planner
) -> None:
    """Root task: each new shape of the inventory, `settings` planned again and applied."""
    async for inventory in shape_changes(cell):
        try:
            managers = plan(settings, inventory)
        except ConfigError as err:
            log.warning("the devices changed and cannot be served so: %s; keeping the last plan", err)
            continue
        diff = await fleet.apply(managers)
        if diff.changed:
            log.info("the devices changed: %s", diff.summary())
