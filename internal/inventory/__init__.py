"""The immutable device inventory shared by every layer, and the cell that holds its latest version."""

from gpu_device_plugin.inventory.cell import SnapshotCell, Watchable
from gpu_device_plugin.inventory.model import Device, Health, Inventory, MigDevice, MigMode, MigProfile
from gpu_device_plugin.inventory.topology import Link, PciePath, Topology

__all__ = [
    "Device",
    "Health",
    "Inventory",
    "Link",
    "MigDevice",
    "MigMode",
    "MigProfile",
    "PciePath",
    "SnapshotCell",
    "Topology",
    "Watchable",
]
