"""The immutable device inventory shared by every layer, and the cell that holds its latest version."""

from gpu_device_plugin.inventory.cell import SnapshotCell
from gpu_device_plugin.inventory.model import Device, Health, Inventory

__all__ = ["Device", "Health", "Inventory", "SnapshotCell"]
