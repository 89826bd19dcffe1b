"""The one interface every discovery backend implements."""

from __future__ import annotations

from typing import Protocol

from gpu_device_plugin.health.source import HealthSource, HealthWiring
from gpu_device_plugin.inventory import Inventory


class DiscoveryBackend(Protocol):
    """Finds the devices on this node, and says how their health is kept current.

    `discover` may block (NVML, file reads): async callers run it in a thread.
    It raises DiscoveryError when the devices cannot be enumerated at all and
    ConfigError when its own configuration is wrong.

    `health_source` is asked once, after the first discovery has been published
    into `wiring.cell`: the loop to run, or None when this backend has nothing
    to watch (a fake backend given a count, NVML with no devices).
    """

    @property
    def name(self) -> str: ...

    def discover(self) -> Inventory: ...

    def health_source(self, wiring: HealthWiring) -> HealthSource | None: ...
