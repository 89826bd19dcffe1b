"""What the cluster tasks read from the configuration: node labels, Events, and how to reach the API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpu_device_plugin.cluster.feature_labels import DEFAULT_LABEL_PREFIX, check_label_prefix
from gpu_device_plugin.cluster.kubeconfig import check_kubeconfig
from gpu_device_plugin.errors import ConfigError


@dataclass(frozen=True)
class ClusterConfig:
    """What the daemon tells the cluster about its node; all off by default."""

    node_labels: bool = False
    """Label the Node with what discovery found (product, count, memory, ...)."""
    node_events: bool = False
    """Post an Event on the Node for every device health transition."""
    label_prefix: str = DEFAULT_LABEL_PREFIX
    """Every feature label key starts with it; only labels under it are ever changed."""
    kubeconfig: Path | None = None
    """Credentials when running outside a pod; None: the pod's service account."""
    node_name: str | None = None
    """This node's name (the downward API's spec.nodeName in a pod)."""

    @property
    def enabled(self) -> bool:
        return self.node_labels or self.node_events

    def __post_init__(self) -> None:
        try:
            check_label_prefix(self.label_prefix)
        except ValueError as err:
            raise ConfigError("label-prefix", str(err)) from err
        if self.enabled and not self.node_name:
            which = "--node-labels" if self.node_labels else "--node-events"
            raise ConfigError(
                "node-name", f"{which} needs this node's name: --node-name, or NODE_NAME (downward API)"
            )
        if self.kubeconfig is not None:
            if not self.kubeconfig.is_file():
                raise ConfigError("kubeconfig", f"{self.kubeconfig} is not a file")
            # Read now, not when the client first connects (after registration): a broken
            # file exits 2 at start instead of failing with the GPUs already advertised.
            check_kubeconfig(self.kubeconfig)
