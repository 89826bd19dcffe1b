"""The one interface every discovery backend implements."""

from __future__ import annotations

from typing import Protocol

from gpu_device_plugin.inventory import Inventory


class DiscoveryBackend(Protocol):
    """Finds the devices on this node.

    `discover` may block (NVML, file reads): async callers run it in a thread.
    It raises DiscoveryError when the devices cannot be enumerated at all and
    ConfigError when its own configuration is wrong.
    """

    @property
    def name(self) -> str: ...

    def discover(self) -> Inventory: ...
