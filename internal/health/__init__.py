"""What every health source shares: publishing new snapshots, recovery, ignored XIDs, supervision.

Each backend's own source lives with the backend (backends/nvml/health.py,
backends/fake/health.py) and is handed over as a HealthSource (source.py).
A source never talks to the kubelet; the server's streams follow the cell.
"""

from gpu_device_plugin.health.publish import publish_snapshot

__all__ = ["publish_snapshot"]
