"""The immutable device inventory shared by every layer, and the cell that holds its latest version."""

from gpu_device_plugin.inventory.cell import SnapshotCell, Watchable
from gpu_device_plugin.inventory.model import Device, Health, Inventory, MigMode
from gpu_device_plugin.inventory.topology import Link, PciePath, Topology

__all__ = [
    "Device",
    "Health",
    "Inventory",
    "Link",
    "MigMode",
    "PciePath",
    "SnapshotCell",
    "Topology",
    "Watchable",
]
