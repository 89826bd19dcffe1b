"""Which resources to serve: the managers for the settings and the current snapshot.

Pure and total: called at start, and again whenever the settings (a config
change) or the inventory's shape (a MIG layout change) may have changed. Equal
inputs plan equal managers, so a caller can diff the plan against what it
serves and leave an unchanged resource's server alone.

MIG strategies (resources/mig.py), as NVIDIA's plugin has them:
- `none`: whole GPUs, MIG mode or not;
- `single`: every MIG device under the whole-GPU name, when every GPU has MIG on
  with one profile (a ConfigError naming the GPU otherwise); no GPU with MIG on:
  whole GPUs, as NVIDIA does;
- `mixed`: one resource per MIG profile present (`<domain>/mig-<profile>`), and
  the GPUs without MIG mode on under the whole-GPU name (served when there is
  any, or when nothing else is: a plan is never empty).

Sharing (resources/shared_plan.py): each of those resources that
sharing names is offered as replicas (time-slicing, or MPS with its daemon's folders: resources/mps.py).
"""

from __future__ import annotations

from gpu_device_plugin.allocator import topology_policy
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.mig import (
    MIG_PREFIX,
    MigProfileManager,
    NonMigGpuManager,
    SingleMigManager,
    check_single,
    mig_enabled,
    mig_resource_name,
    profiles_present,
)
from gpu_device_plugin.resources.mps import daemon_plan, with_mps
from gpu_device_plugin.resources.replicated import ReplicatedManager
from gpu_device_plugin.resources.settings import MigStrategy, ResourceSettings, SharingStrategy
from gpu_device_plugin.resources.shared_plan import replicate
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager

# NVIDIA's plugin refuses it too: its MPS daemon shares whole GPUs only.
MPS_WITH_MIG = "sharing MIG devices with MPS is not supported: MPS shares whole GPUs (set migStrategy none)"


def plan_resources(settings: ResourceSettings, inventory: Inventory) -> tuple[ResourceManager, ...]:
    """The managers to serve, each with a name of its own; ConfigError when the settings
    cannot be served on this inventory (a MIG layout that `single` cannot offer, ...)."""
    sharing = settings.sharing
    if (
        sharing is not None
        and sharing.strategy is SharingStrategy.MPS
        and settings.mig_strategy is not MigStrategy.NONE
    ):
        raise ConfigError("sharing.mps", f"{MPS_WITH_MIG} (migStrategy is {settings.mig_strategy})")
    bases = _bases(settings, inventory)
    if sharing is None:
        return bases
    domain = settings.resource_name.partition("/")[0]

    def may_be_absent(name: str) -> bool:
        # A cluster's one file names the MIG profiles of all its nodes; a node without
        # one shares none of it (NVIDIA skips it too). Any other name must be served here.
        return settings.mig_strategy is MigStrategy.MIXED and name.startswith(f"{domain}/{MIG_PREFIX}")

    managers = replicate(bases, sharing, settings.shared_policy, inventory, may_be_absent=may_be_absent)
    if sharing.strategy is not SharingStrategy.MPS:
        return managers
    managers = tuple(with_mps(m, settings.mps_root) for m in managers)
    for manager in managers:
        if isinstance(manager, ReplicatedManager):
            # More clients than an MPS server takes: refused here, so serve and
            # mps-control both exit 2 rather than the daemon failing each client.
            daemon_plan(manager, inventory).check()
    return managers


def _bases(settings: ResourceSettings, inventory: Inventory) -> tuple[ResourceManager, ...]:
    """The resources before sharing: whole GPUs, or MIG devices as the strategy has them."""
    whole = WholeGpuManager(settings.resource_name, settings.allocate, topology_policy)
    if settings.mig_strategy is MigStrategy.SINGLE:
        if not check_single(inventory):
            return (whole,)
        return (SingleMigManager(settings.resource_name, settings.allocate),)
    if settings.mig_strategy is MigStrategy.MIXED:
        migs = tuple(
            MigProfileManager(mig_resource_name(settings.resource_name, p), p, settings.allocate)
            for p in profiles_present(inventory)
        )
        names = {m.resource_name for m in migs}
        if settings.resource_name in names:
            raise ConfigError(
                "resource-name", f"{settings.resource_name} is also the name of a MIG profile's resource"
            )
        gpus: tuple[ResourceManager, ...] = ()
        if not migs or any(not mig_enabled(d) for d in inventory.devices):
            gpus = (NonMigGpuManager(settings.resource_name, settings.allocate, topology_policy),)
        return gpus + migs
    return (whole,)
