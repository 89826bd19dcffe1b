"""Checks shared by Allocate and GetPreferredAllocation.

Each failure names the offending ids (the first few of them, cut to a
readable length: errors.quote_ids), so the kubelet's event on the pod tells the
operator which device was the problem without any request, however absurd,
making a message too big for the status trailer or a log line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from gpu_device_plugin.errors import (
    MAX_ID_LENGTH,
    DeviceUnavailableError,
    RequestError,
    quote_ids,
)
from gpu_device_plugin.inventory import Inventory


def check_bounds(ids: Sequence[str], *, what: str, limit: int) -> None:
    """Refuse, before any other work, a list no kubelet could send.

    More ids than `limit` (the devices there are) means some are unknown or
    named twice; an id longer than the kubelet's 63 characters is unknown.
    """
    if len(ids) > limit:
        raise RequestError(
            f"{what}: names {len(ids):,} devices, more than the {limit:,} this plugin has ({quote_ids(ids)})",
            ids,
        )
    too_long = [i for i in ids if len(i) > MAX_ID_LENGTH]
    if too_long:
        raise RequestError(
            f"{what}: unknown device ids {quote_ids(too_long)} (a device id has at most "
            f"{MAX_ID_LENGTH} characters)",
            too_long,
        )


def check_containers(count: int, *, limit: int) -> None:
    """Each container needs devices of its own: more containers than devices is no real request."""
    if count > limit:
        raise RequestError(
            f"container_requests: {count:,} containers, more than the {limit:,} devices this plugin has"
        )


def check_distinct(ids: Sequence[str], *, what: str) -> None:
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise RequestError(f"{what}: device ids named more than once: {quote_ids(dupes)}", dupes)


def check_allocatable(
    inventory: Inventory, ids: Sequence[str], *, what: str, tolerate: Collection[str] = ()
) -> None:
    """Raise unless every id is known, named once, and healthy (or in `tolerate`).

    `what` names the list in messages ("devices_ids", "available_deviceIDs").
    `tolerate`: unhealthy devices to hand out all the same (a health race the
    kubelet could not see; the server decides which).
    """
    unknown = [i for i in ids if i not in inventory.by_id]
    if unknown:
        raise RequestError(f"{what}: unknown device ids {quote_ids(unknown)}", unknown)
    check_distinct(ids, what=what)
    unhealthy = [i for i in ids if not inventory.by_id[i].healthy and i not in tolerate]
    if unhealthy:
        raise DeviceUnavailableError(
            f"{what}: devices are unhealthy and cannot be allocated: {quote_ids(unhealthy)}",
            unhealthy,
        )
