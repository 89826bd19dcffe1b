"""Re-discovery: the backend asked again, so a MIG layout changed under us (mig-parted) is seen.

The backend's discover() runs on a worker thread every interval (and on each
config change, through the reconciler); what it finds replaces the snapshot
only when its shape differs (devices or MIG devices added, removed or changed,
not health), and devices that still exist keep the health the health loop gave
them: re-discovery must never make a faulty GPU look healthy, nor wake a stream
for nothing. A failing discovery is logged and the last snapshot kept.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from gpu_device_plugin.discovery.backend import DiscoveryBackend
from gpu_device_plugin.errors import PluginError
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.live.reconciler import inventory_shape

log = logging.getLogger(__name__)


def keep_health(current: Inventory, found: Inventory) -> Inventory:
    """`found`, with the health of every device `current` also has."""
    known = current.by_id
    devices = tuple(
        replace(d, health=known[d.id].health, health_reason=known[d.id].health_reason) if d.id in known else d
        for d in found.devices
    )
    return replace(found, devices=devices)


async def rediscover_once(backend: DiscoveryBackend, cell: SnapshotCell[Inventory]) -> bool:
    """Discover now; publish when the shape changed. Whether it did."""
    try:
        found = await asyncio.to_thread(backend.discover)
    except PluginError as err:
        log.warning("re-discovery failed, keeping the last snapshot: %s", err)
        return False
    current = cell.value
    if inventory_shape(found) == inventory_shape(current):
        return False
    merged = keep_health(current, found)
    log.info(
        "re-discovery: the devices changed (%d GPU(s), %d MIG device(s) now)",
        len(merged.devices),
        len(merged.mig_devices),
    )
    return cell.publish(merged)


async def rediscovery(backend: DiscoveryBackend, cell: SnapshotCell[Inventory], interval_s: float) -> None:
    """Root task: rediscover_once every `interval_s`."""
    while True:
        await asyncio.sleep(interval_s)
        await rediscover_once(backend, cell)
