"""Wiring for `mps-control`: the sidecar that runs one MPS control daemon per MPS resource.

It reads the same configuration as `serve` (NVIDIA's --config-file, the same
flags), discovers the same GPUs and plans the same resources, so the daemons it
starts are exactly the ones the plugin checks for; then it supervises them
(mps/supervise.py) until SIGTERM, when each is told to quit.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from gpu_device_plugin.backends.config import DiscoveryConfig
from gpu_device_plugin.backends.registry import make_backend
from gpu_device_plugin.discovery.initial import initial_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.mps.plan import DaemonPlan
from gpu_device_plugin.mps.supervise import DaemonSupervisor
from gpu_device_plugin.resources.mps import daemon_plan, mps_extension
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.replicated import ReplicatedManager
from gpu_device_plugin.resources.settings import ResourceSettings
from gpu_device_plugin.root_tasks import run_root_tasks

log = logging.getLogger(__name__)

DEFAULT_BINARY = "nvidia-cuda-mps-control"
# After SIGTERM: each daemon's `quit`, then its SIGTERM, each bounded; all at once.
STOP_TIMEOUT_S = 10.0


def find_binary(name: str) -> Path:
    """The control binary: a path as given, or a name looked up on PATH; ConfigError if neither runs."""
    found = name if "/" in name else shutil.which(name)
    if found is None:
        raise ConfigError(
            "mps-control-bin",
            f"{name} is not on PATH (the NVIDIA container runtime adds it when the container "
            "asks for the compute capability)",
        )
    path = Path(found)
    if not path.is_file():
        raise ConfigError("mps-control-bin", f"{path} does not exist")
    if not shutil.which(str(path)):
        raise ConfigError("mps-control-bin", f"{path} is not executable")
    return path


def daemon_plans(settings: ResourceSettings, inventory: Inventory) -> tuple[DaemonPlan, ...]:
    """One plan per MPS resource with at least one GPU on this node, as `serve` plans them."""
    plans = []
    for manager in plan_resources(settings, inventory):
        if mps_extension(manager) is not None and isinstance(manager, ReplicatedManager):
            plan = daemon_plan(manager, inventory)
            if plan.gpus:
                plans.append(plan)
    return tuple(plans)


async def run_mps_control(
    settings: ResourceSettings,
    discovery: DiscoveryConfig,
    binary: Path,
    *,
    stop: asyncio.Event | None = None,
    config_line: str | None = None,
) -> None:
    inventory = initial_inventory(make_backend(discovery), fail_on_init_error=discovery.fail_on_init_error)
    plans = daemon_plans(settings, inventory)
    if config_line is not None:
        log.info("%s", config_line)
    if not plans:
        # A sidecar that exits is restarted forever: wait for SIGTERM instead, as NVIDIA's does.
        log.info("no resource is shared with MPS here (sharing.mps.resources): no daemon to run")
    for plan in plans:
        log.info(
            "MPS resource %s: %d GPUs x %d replicas: %s",
            plan.resource_name,
            len(plan.gpus),
            plan.replicas,
            "; ".join(plan.commands()),
        )
    tasks = {
        f"mps {plan.resource_name}": DaemonSupervisor(
            plan, settings.mps_root, binary, stop_timeout_s=STOP_TIMEOUT_S
        ).run()
        for plan in plans
    }
    await run_root_tasks(tasks, stop=stop, cancel_timeout=2 * STOP_TIMEOUT_S + 5)
