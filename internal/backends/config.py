"""What the backends read from the configuration: which kind, and each kind's options.

Built by the CLI from flags; a contradiction (a fake-only option with NVML) or a
value out of bounds is a ConfigError naming the flag.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from gpu_device_plugin.errors import ConfigError

MAX_FAKE_DEVICES = 1024


class DiscoveryKind(enum.StrEnum):
    NVML = "nvml"
    FAKE = "fake"


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
