"""GetPreferredAllocation: check a request's structure, then ask a policy for the set.

The preferred allocation is advice: the kubelet intersects it with its
candidates and the Allocate that follows is the gate. A failure here, though,
becomes the pod's UnexpectedAdmissionError, never retried. And the kubelet's
view of health lags ours by one ListAndWatch message, so its candidates can
name a device that turned unhealthy a moment ago, or one that is gone. So a
structurally valid request (no duplicates, must_include within available,
must_include <= size <= available) always gets an answer: healthy known
devices first, chosen by the policy; unhealthy ones, then unknown ones, only to
fill what is asked. The plan says what it worked around, for the log and the
span. Only structural mistakes are refused.

A policy only ever sees known devices and a request that fits, so every policy
(in-order, topology-aware) can assume must_include lies within available and
the size fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gpu_device_plugin.allocator.validate import check_distinct
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


@dataclass(frozen=True, slots=True)
class PreferredPlan:
    """The answer for one container, and what in the request was not as the kubelet thought."""

    ids: list[str]
    # Named in available_deviceIDs but unhealthy in our snapshot.
    unhealthy: tuple[str, ...] = ()
    # Named in available_deviceIDs but not in our snapshot (gone, or never ours).
    unknown: tuple[str, ...] = ()
    # Of those, the ones in the answer: must_include, or needed to fill the size.
    used: tuple[str, ...] = ()

    @property
    def worked_around(self) -> bool:
        return bool(self.unhealthy or self.unknown)


def check_preferred_request(available: Sequence[str], must_include: Sequence[str], size: int) -> None:
    """The structural checks: the only reasons to refuse a preferred allocation."""
    # First, so that a size of 0 or less is not reported as "smaller than must_include".
    if size < 1:
        raise RequestError(f"allocation_size must be at least 1, got {size}")
    check_distinct(available, what="available_deviceIDs")
    check_distinct(must_include, what="must_include_deviceIDs")
    offered = set(available)
    outside = [i for i in must_include if i not in offered]
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


def plan_preferred(
    inventory: Inventory,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    policy: PreferredPolicy = in_order_policy,
) -> PreferredPlan:
    check_preferred_request(available, must_include, size)
    by_id = inventory.by_id
    unknown = [i for i in available if i not in by_id]
    unhealthy = [i for i in available if i in by_id and not by_id[i].healthy]
    must = set(must_include)
    known_must = [i for i in must_include if i in by_id]
    healthy_free = [i for i in available if i in by_id and by_id[i].healthy and i not in must]
    need = size - len(must_include)
    if need <= len(healthy_free):
        # The usual case: the policy chooses among healthy devices (around any must_include).
        chosen = policy(inventory, known_must + healthy_free, known_must, len(known_must) + need)
        ids = chosen + [i for i in must_include if i not in by_id]
    else:
        # Not enough healthy devices: every one of them, then unhealthy ones (by index),
        # then unknown ones (in the kubelet's order), until the size is met.
        unhealthy_free = sorted((i for i in unhealthy if i not in must), key=lambda i: by_id[i].index)
        unknown_free = [i for i in unknown if i not in must]
        ids = list(must_include) + (healthy_free + unhealthy_free + unknown_free)[:need]
    used = tuple(i for i in ids if i not in by_id or not by_id[i].healthy)
    return PreferredPlan(ids=ids, unhealthy=tuple(unhealthy), unknown=tuple(unknown), used=used)


def preferred_allocation(
    inventory: Inventory,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    policy: PreferredPolicy = in_order_policy,
) -> list[str]:
    """The preferred set alone (see plan_preferred for what was worked around)."""
    return plan_preferred(inventory, available, must_include, size, policy).ids
