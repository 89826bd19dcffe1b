"""GetPreferredAllocation: validate a request, then ask a policy for the set.

A policy only ever sees valid requests: `preferred_allocation` checks the
kubelet's input once, so every policy (in-order, topology-aware) can
assume must_include lies within available and the size fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gpu_device_plugin.allocator.validate import check_allocatable
from gpu_device_plugin.errors import RequestError, quote_ids
from gpu_device_plugin.inventory import Inventory


class PreferredPolicy(Protocol):
    def __call__(
        self,
        inventory: Inventory,
        available: Sequence[str],
        must_include: Sequence[str],
        size: int,
    ) -> list[str]: ...


def in_order_policy(
    inventory: Inventory, available: Sequence[str], must_include: Sequence[str], size: int
) -> list[str]:
    """must_include first, then the other available devices by index: stable, topology-blind."""
    chosen = list(must_include)
    taken = set(chosen)
    rest = sorted((i for i in available if i not in taken), key=lambda i: inventory.by_id[i].index)
    return chosen + rest[: size - len(chosen)]


def preferred_allocation(
    inventory: Inventory,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    policy: PreferredPolicy = in_order_policy,
) -> list[str]:
    # First, so that a size of 0 or less is not reported as "smaller than must_include".
    if size < 1:
        raise RequestError(f"allocation_size must be at least 1, got {size}")
    check_allocatable(inventory, available, what="available_deviceIDs")
    check_allocatable(inventory, must_include, what="must_include_deviceIDs")
    outside = [i for i in must_include if i not in set(available)]
    if outside:
        raise RequestError(
            f"must_include_deviceIDs not within available_deviceIDs: {quote_ids(outside)}", outside
        )
    if size < len(must_include):
        raise RequestError(
            f"allocation_size {size} is smaller than must_include_deviceIDs "
            f"({len(must_include)}: {quote_ids(must_include)})",
            must_include,
        )
    if size > len(available):
        raise RequestError(
            f"allocation_size {size} is larger than available_deviceIDs "
            f"({len(available)}: {quote_ids(available)})",
            available,
        )
    return policy(inventory, available, must_include, size)
