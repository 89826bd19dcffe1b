"""Backends that find devices and describe them as an immutable Inventory.

Discovery never decides health policy and never talks to the kubelet; it only
answers "what is on this node right now".
"""

from gpu_device_plugin.discovery.backend import DiscoveryBackend

__all__ = ["DiscoveryBackend"]
