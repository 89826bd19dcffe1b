"""Checks shared by Allocate and GetPreferredAllocation.

Each failure names every offending id, so the kubelet's event on the pod tells
the operator exactly which device was the problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gpu_device_plugin.errors import DeviceUnavailableError, RequestError, quote_ids
from gpu_device_plugin.inventory import Inventory


def check_allocatable(inventory: Inventory, ids: Sequence[str], *, what: str) -> None:
    """Raise unless every id is known, named once, and healthy.

    `what` names the list in messages ("devices_ids", "available_deviceIDs").
    """
    unknown = [i for i in ids if i not in inventory.by_id]
    if unknown:
        raise RequestError(f"{what}: unknown device ids {quote_ids(unknown)}", unknown)
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise RequestError(f"{what}: device ids named more than once: {quote_ids(dupes)}", dupes)
    unhealthy = [i for i in ids if not inventory.by_id[i].healthy]
    if unhealthy:
        raise DeviceUnavailableError(
            f"{what}: devices are unhealthy and cannot be allocated: {quote_ids(unhealthy)}",
            unhealthy,
        )
