"""Health sources: they publish new Inventory snapshots when device health changes.

A source never talks to the kubelet; the server's streams follow the cell.
"""

from gpu_device_plugin.health.publish import publish_snapshot

__all__ = ["publish_snapshot"]
