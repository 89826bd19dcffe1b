"""The `serve` command line the process-level tests start."""

from __future__ import annotations

import sys
from pathlib import Path


def serve_argv(config: Path, plugin_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gpu_device_plugin.cli", "serve",
        "--discovery", "fake", "--fake-config", str(config),
        "--device-plugin-dir", str(plugin_dir), *extra,
    ]  # fmt: skip
