"""Pure functions over an Inventory: which devices to prefer, and what a container gets.

No I/O, no clocks, no globals: the server calls in with a snapshot and gets an
answer or a RequestError.
"""

from gpu_device_plugin.allocator.preferred import (
    PreferredPlan,
    PreferredPolicy,
    in_order_policy,
    plan_preferred,
    preferred_allocation,
)
from gpu_device_plugin.allocator.response import (
    AllocateOptions,
    ContainerAllocation,
    DeviceIdStrategy,
    DeviceListStrategy,
    DeviceNode,
    Mount,
    container_allocation,
)
from gpu_device_plugin.allocator.scoring import WEIGHTS, set_score, topology_policy
from gpu_device_plugin.allocator.validate import check_allocatable, check_bounds, check_containers

__all__ = [
    "WEIGHTS",
    "AllocateOptions",
    "ContainerAllocation",
    "DeviceIdStrategy",
    "DeviceListStrategy",
    "DeviceNode",
    "Mount",
    "PreferredPlan",
    "PreferredPolicy",
    "check_allocatable",
    "check_bounds",
    "check_containers",
    "container_allocation",
    "in_order_policy",
    "plan_preferred",
    "preferred_allocation",
    "set_score",
    "topology_policy",
]
