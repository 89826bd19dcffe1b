"""Choosing a backend from the configuration and running the first discovery."""

from __future__ import annotations

import logging

from gpu_device_plugin.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.discovery.base import DiscoveryBackend
from gpu_device_plugin.discovery.fake import FakeBackend
from gpu_device_plugin.discovery.nvml import NvmlBackend, NvmlSession, load_pynvml
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Inventory

log = logging.getLogger(__name__)


def make_backend(config: DiscoveryConfig) -> DiscoveryBackend:
    if config.kind is DiscoveryKind.FAKE:
        return FakeBackend(config_path=config.fake_config, count=config.fake_devices)
    try:
        library = load_pynvml()
    except ImportError as err:  # pragma: no cover - nvidia-ml-py is a dependency
        raise DiscoveryError(f"nvidia-ml-py is not installed: {err}") from err
    return NvmlBackend(NvmlSession(library))


def initial_inventory(backend: DiscoveryBackend, *, fail_on_init_error: bool) -> Inventory:
    """First discovery. NVML failing at start either ends the process or serves nothing.

    Serving zero devices (rather than crash-looping) keeps the DaemonSet pod
    quiet on nodes that match its selector but have no usable GPU.
    """
    try:
        inventory = backend.discover()
    except DiscoveryError as err:
        if fail_on_init_error:
            raise
        log.error("%s; serving zero devices (--fail-on-init-error is off)", err)
        return Inventory(devices=(), backend=backend.name)
    log.info(
        "discovered %d device(s) with the %s backend (driver %s, CUDA %s)",
        len(inventory.devices),
        inventory.backend,
        inventory.driver_version or "n/a",
        inventory.cuda_version or "n/a",
    )
    return inventory
