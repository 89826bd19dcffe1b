"""The fake backend: devices described by a YAML file or a count.

First-class, not a test double: kind e2e, CI and the demo run on it, and editing
its file is how faults are injected (see health.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpu_device_plugin.backends.fake.spec import FakeConfig, load_fake_config, to_inventory
from gpu_device_plugin.inventory import Inventory


@dataclass(frozen=True)
class FakeBackend:
    """Reads `config_path` on every discover(), or serves `count` identical GPUs."""

    config_path: Path | None = None
    count: int | None = None
    name: str = "fake"

    def __post_init__(self) -> None:
        if (self.config_path is None) == (self.count is None):
            raise ValueError("FakeBackend needs exactly one of config_path or count")

    def discover(self) -> Inventory:
        if self.config_path is not None:
            return to_inventory(load_fake_config(self.config_path))
        return to_inventory(FakeConfig(count=self.count))
