"""The plan at start: plan_resources, its warnings logged, and what --fail-on-init-error
makes of a layout the MIG strategy cannot serve.

With --fail-on-init-error (the default) a layout `single` cannot serve is a
ConfigError (exit 2, one line). Without it, the one ERROR line says why, and
the whole-GPU resource is served with no devices: nothing rather than
something wrong, and the plugin stays up to be probed.
"""

from __future__ import annotations

import logging

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.mig import RefusedManager, mig_enabled, mig_notes
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.settings import MigStrategy, ResourceSettings

log = logging.getLogger(__name__)


def plan_at_start(
    settings: ResourceSettings, inventory: Inventory, *, fail_on_init_error: bool
) -> tuple[ResourceManager, ...]:
    try:
        managers = plan_resources(settings, inventory)
    except ConfigError as err:
        if fail_on_init_error or err.field != "mig-strategy":
            raise
        log.error("%s: serving no devices under %s (--no-fail-on-init-error)", err, settings.resource_name)
        return (RefusedManager(settings.resource_name, err.reason, settings.allocate),)
    whole = settings.mig_strategy is MigStrategy.NONE
    if settings.mig_strategy is MigStrategy.SINGLE and not any(mig_enabled(d) for d in inventory.devices):
        log.info(
            "--mig-strategy single: no GPU has MIG mode on, so whole GPUs are served under %s "
            "(as NVIDIA's plugin does)",
            settings.resource_name,
        )
    for note in mig_notes(inventory, whole=whole, resource_name=settings.resource_name):
        log.warning("%s", note)
    return managers
