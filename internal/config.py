"""The daemon's one typed configuration, validated once at start-up.

The CLI fills it from flags, environment variables and an optional config file;
every layer receives only the part it needs. A bad value is a ConfigError naming
the field, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from gpu_device_plugin.allocator import AllocateOptions
from gpu_device_plugin.cluster.feature_labels import DEFAULT_LABEL_PREFIX, check_label_prefix
from gpu_device_plugin.cluster.kubeconfig import check_kubeconfig
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.health.tracker import RecoveryPolicy
from gpu_device_plugin.health.xid import IgnoredXids
from gpu_device_plugin.telemetry.metrics import parse_address

DEFAULT_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
DEFAULT_RESOURCE_NAME = "example.com/gpu"
# Every number is finite and bounded: a NaN or an infinity compares false with every
# bound and would disable a loop for ever without a word.
MAX_FAKE_DEVICES = 1024
MAX_PROBE_INTERVAL_S = 3600.0  # an hour: a probe less often than that is no health check
MAX_QUIET_PERIOD_S = 86400.0  # a day, before the up-to-16x doubling for flapping devices

# An extended resource name as the kubelet validates it: a DNS-1123 subdomain
# prefix, a slash, and a qualified name; kubernetes.io domains are reserved.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class DiscoveryKind(enum.StrEnum):
    NVML = "nvml"
    FAKE = "fake"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


def check_resource_name(name: str) -> str:
    domain, slash, short = name.partition("/")
    if not slash:
        raise ConfigError("resource-name", f"{name!r} must be <domain>/<name>, e.g. example.com/gpu")
    if len(domain) > 253 or not _DNS_SUBDOMAIN.match(domain):
        raise ConfigError("resource-name", f"domain {domain!r} is not a valid DNS subdomain")
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io") or domain == "k8s.io":
        raise ConfigError("resource-name", f"domain {domain!r} is reserved for Kubernetes")
    if len(short) > 63 or not _QUALIFIED_NAME.match(short):
        raise ConfigError("resource-name", f"name {short!r} is not a valid qualified name")
    return name


def check_seconds(field: str, value: float, *, maximum: float, zero_ok: bool) -> float:
    """A duration in seconds: finite, within (0 or above 0) .. maximum."""
    lowest = "0" if zero_ok else "above 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > maximum:
        raise ConfigError(field, f"must be a number of seconds from {lowest} to {maximum:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class DiscoveryConfig:
    kind: DiscoveryKind = DiscoveryKind.NVML
    """Where devices come from: real GPUs through NVML, or the fake backend."""
    fake_config: Path | None = None
    """Fake backend: YAML file describing the devices; edits take effect live."""
    fake_devices: int | None = None
    """Fake backend: this many identical healthy GPUs instead of a file."""
    fail_on_init_error: bool = True
    """NVML unusable at start: exit non-zero (True) or serve zero devices (False)."""
    driver_root: Path = Path("/")
    """Folder under which libnvidia-ml and the /dev/nvidia* nodes are found (NVIDIA's nvidiaDriverRoot)."""

    def __post_init__(self) -> None:
        if not self.driver_root.is_absolute() or not self.driver_root.is_dir():
            raise ConfigError("driver-root", f"{self.driver_root} is not an existing absolute folder")
        if self.kind is DiscoveryKind.FAKE:
            if (self.fake_config is None) == (self.fake_devices is None):
                raise ConfigError(
                    "fake-config", "the fake backend needs exactly one of --fake-config or --fake-devices"
                )
            if self.fake_devices is not None and not 0 <= self.fake_devices <= MAX_FAKE_DEVICES:
                raise ConfigError(
                    "fake-devices", f"must be between 0 and {MAX_FAKE_DEVICES}, got {self.fake_devices}"
                )
        else:
            given = [
                n
                for n, v in (("--fake-config", self.fake_config), ("--fake-devices", self.fake_devices))
                if v is not None
            ]
            if given:
                # Silently trying NVML with a fake option set is what a typo looks like.
                raise ConfigError(
                    "discovery",
                    f"{self.kind} contradicts {' and '.join(given)}, which only the fake backend reads: "
                    "use --discovery fake, or drop them",
                )


class HealthChecks(enum.StrEnum):
    ALL = "all"
    NONE = "none"
    DISABLED = "disabled"  # same as none: the keyword NVIDIA's users know


@dataclass(frozen=True)
class HealthConfig:
    checks: HealthChecks = HealthChecks.ALL
    """all: NVML events and probes (nvml) or file edits (fake); none/disabled: devices stay Healthy."""
    ignored_xids: IgnoredXids = field(default_factory=IgnoredXids)
    """XIDs that leave a device healthy (caused by applications, not the GPU)."""
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    """When an unhealthy device may become Healthy again."""
    probe_interval_s: float = 10.0
    """Seconds between probes of every device (nvml)."""

    @property
    def enabled(self) -> bool:
        return self.checks is HealthChecks.ALL

    def __post_init__(self) -> None:
        check_seconds(
            "health-probe-interval", self.probe_interval_s, maximum=MAX_PROBE_INTERVAL_S, zero_ok=False
        )
        check_seconds(
            "health-quiet-period", self.recovery.quiet_period_s, maximum=MAX_QUIET_PERIOD_S, zero_ok=True
        )


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

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)
        if self.metrics_address is not None:
            try:
                parse_address(self.metrics_address)
            except ValueError as err:
                raise ConfigError("metrics-address", str(err)) from err
        if "=" in self.allocate.cdi_kind or "/" not in self.allocate.cdi_kind:
            raise ConfigError("cdi-kind", f"{self.allocate.cdi_kind!r} must be <vendor>/<class>")
