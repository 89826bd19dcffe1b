"""Which resources to serve: the managers for the settings and the current snapshot.

Pure and total: called at start, and again whenever the settings (a config
change) or the inventory's shape (a MIG layout change) may have changed. Equal
inputs plan equal managers, so a caller can diff the plan against what it
serves and leave an unchanged resource's server alone.
"""

from __future__ import annotations

from gpu_device_plugin.allocator import topology_policy
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.settings import MigStrategy, ResourceSettings
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager

PLANNED = "is not supported yet (planned: issue 16)"


def plan_resources(settings: ResourceSettings, inventory: Inventory) -> tuple[ResourceManager, ...]:
    """The managers to serve, each with a name of its own; ConfigError when the settings
    cannot be served on this inventory (a MIG layout that `single` cannot offer, ...)."""
    if settings.mig_strategy is not MigStrategy.NONE:
        raise ConfigError("mig-strategy", f"{settings.mig_strategy} {PLANNED}")
    if settings.sharing is not None:
        raise ConfigError("sharing", f"{settings.sharing.strategy} {PLANNED}")
    return (WholeGpuManager(settings.resource_name, settings.allocate, topology_policy),)
