"""The daemon's one typed configuration, validated once at start-up: the layers' configs composed.

The CLI fills it from flags, environment variables and an optional config file;
each layer owns its own part (backends/config.py, health/config.py,
cluster/config.py, the allocator's AllocateOptions) and receives only that. A
bad value is a ConfigError naming the field, which the CLI turns into exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpu_device_plugin.allocator import AllocateOptions
from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.backends.config import DiscoveryConfig
from gpu_device_plugin.cluster.config import ClusterConfig
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.health.config import HealthConfig
from gpu_device_plugin.live.config import DEFAULT_REDISCOVERY_INTERVAL_S, LiveConfig
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.resources.names import DEFAULT_RESOURCE_NAME, check_resource_name
from gpu_device_plugin.resources.settings import MigStrategy, ResourceSettings, Sharing
from gpu_device_plugin.server.sockets import DEFAULT_PLUGIN_DIR
from gpu_device_plugin.telemetry.logs import LogFormat
from gpu_device_plugin.telemetry.metrics import parse_address


@dataclass(frozen=True)
class ServeConfig:
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    resource_name: str = DEFAULT_RESOURCE_NAME
    """Extended resource advertised to the kubelet, <domain>/<name>."""
    device_plugin_dir: Path = DEFAULT_PLUGIN_DIR
    """The kubelet's device-plugins folder (holds kubelet.sock)."""
    allocate: AllocateOptions = field(default_factory=AllocateOptions)
    health: HealthConfig = field(default_factory=HealthConfig)
    log_format: LogFormat = LogFormat.TEXT
    log_level: str = "INFO"
    metrics_address: str | None = None
    """HOST:PORT to serve Prometheus metrics on (/metrics); None: no metrics at all."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    mig_strategy: MigStrategy = MigStrategy.NONE
    sharing: Sharing | None = None
    """Replicas of the resources (NVIDIA's sharing section); None: whole devices only."""
    shared_policy: SharedPolicy = SharedPolicy.DISTRIBUTED
    mps_root: MpsRoot = field(default_factory=MpsRoot)
    """The MPS control daemons' folders on the host (NVIDIA's flags.mpsRoot); read with sharing.mps."""
    live: LiveConfig | None = None
    """--config-dir: the per-node config, chosen by a Node label and applied live; None: off."""
    rediscovery_interval_s: float = DEFAULT_REDISCOVERY_INTERVAL_S
    """Seconds between re-discoveries (a MIG layout changed under us); 0: never."""

    @property
    def resources(self) -> ResourceSettings:
        """What resources/plan.py reads: the resource part of this config."""
        return ResourceSettings(
            self.resource_name,
            self.allocate,
            self.mig_strategy,
            self.sharing,
            shared_policy=self.shared_policy,
            mps_root=self.mps_root,
        )

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)
        if self.live is not None and not self.cluster.node_name:
            raise ConfigError(
                "node-name", "--config-dir needs this node's name: --node-name, or NODE_NAME (downward API)"
            )
        if self.metrics_address is not None:
            try:
                parse_address(self.metrics_address)
            except ValueError as err:
                raise ConfigError("metrics-address", str(err)) from err
