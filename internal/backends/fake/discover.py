"""The fake backend: devices described by a YAML file or a count.

First-class, not a test double: kind e2e, CI and the demo run on it, and editing
its file is how faults are injected (see health.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_device_plugin.backends.config import DiscoveryConfig
from gpu_device_plugin.backends.fake.health import follow_fake_file
from gpu_device_plugin.backends.fake.spec import FakeConfig, load_fake_config, to_inventory
from gpu_device_plugin.health.source import HealthSource, HealthWiring
from gpu_device_plugin.health.status import FAKE_FILE
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

    def health_source(self, wiring: HealthWiring) -> HealthSource | None:
        """The file's edits, when devices come from a file; a count has nothing to watch."""
        path = self.config_path
        if path is None:
            return None

        def follow(ready: asyncio.Event) -> Coroutine[Any, Any, None]:
            return follow_fake_file(
                path,
                wiring.cell,
                xids=wiring.ignored_xids,
                ready=ready,
                metrics=wiring.metrics,
                tracer=wiring.tracer,
            )

        return HealthSource(follow, (FAKE_FILE,))


def fake_backend(config: DiscoveryConfig) -> FakeBackend:
    return FakeBackend(config_path=config.fake_config, count=config.fake_devices)
