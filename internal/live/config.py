"""What the per-node config reads from the command line: the folder, the label, the default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gpu_device_plugin.errors import ConfigError

#: NVIDIA's label (their config-manager's --node-label default).
DEFAULT_NODE_LABEL = "nvidia.com/device-plugin.config"
#: Between re-discoveries (live/rediscover.py): a re-partitioned GPU is served within a
#: minute, and a discovery that finds the same devices publishes nothing, wakes no stream.
DEFAULT_REDISCOVERY_INTERVAL_S = 60.0
# A label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
# A config's name is a ConfigMap key (and a label value): letters, digits, -, _ and .
_CONFIG_NAME = re.compile(r"^[-._A-Za-z0-9]{1,253}$")


def check_config_name(name: str) -> str | None:
    """Why `name` cannot name a config (a ConfigMap key), or None."""
    if not _CONFIG_NAME.fullmatch(name) or name.startswith(".."):
        return f"{name!r} is not a config name (a ConfigMap key: letters, digits, '-', '_', '.')"
    return None


@dataclass(frozen=True)
class LiveConfig:
    config_dir: Path
    """The folder of named configs (a ConfigMap mounted as a volume), one file per name."""
    node_label: str = DEFAULT_NODE_LABEL
    """The Node label whose value names the config to apply."""
    default_config: str | None = None
    """The config applied while the label is unset; None: NVIDIA's fallbacks."""

    def __post_init__(self) -> None:
        if not self.config_dir.is_dir():
            raise ConfigError("config-dir", f"{self.config_dir} is not a folder")
        if not _KEY.fullmatch(self.node_label):
            raise ConfigError("node-config-label", f"{self.node_label!r} is not a label key")
        if self.default_config is not None:
            problem = check_config_name(self.default_config)
            if problem is not None:
                raise ConfigError("default-config", problem)
