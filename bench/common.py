"""Helpers every benchmark shares: latency percentiles and the `serve` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds of samples taken in seconds."""
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 4)

    return {
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1] * 1e3, 4),
        "n": len(ordered),
    }


def serve_argv(config: Path, plugin_dir: Path, *extra: str) -> list[str]:
    """The plugin as its own process on the fake backend, quiet unless something is wrong."""
    return [
        sys.executable, "-m", "gpu_device_plugin.cli", "serve",
        "--discovery", "fake", "--fake-config", str(config),
        "--device-plugin-dir", str(plugin_dir), "--log-level", "WARNING", *extra,
    ]  # fmt: skip


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print the result as JSON, and write it to `out` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
