"""gpu-device-plugin: a Kubernetes device plugin for NVIDIA GPUs.

Data flows one way: discovery -> inventory -> health -> server -> kubelet. The
allocator is pure functions called by the server.
"""

__version__ = "0.1.0"
