"""The discovery seam: the interface every backend implements, and the first discovery.

The backends themselves live in gpu_device_plugin.backends (one folder each).
Discovery never decides health policy and never talks to the kubelet; it only
answers "what is on this node right now".
"""

from gpu_device_plugin.discovery.backend import DiscoveryBackend

__all__ = ["DiscoveryBackend"]
