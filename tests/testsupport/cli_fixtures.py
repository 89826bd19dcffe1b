"""Fixtures for tests that run the CLI in process (click's CliRunner).

Loaded for every test by the root conftest's `pytest_plugins`; none is autouse,
so a test module opts in by naming them.
"""

from __future__ import annotations

import os

import pytest

from gpu_device_plugin.cli import main as cli_main
from gpu_device_plugin.cli import serve as serve_module
from gpu_device_plugin.cli.config import ServeConfig


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU_DP_* or OTEL_* of the caller's, and no logging set-up that outlives the test."""
    for name in list(os.environ):
        if name.startswith(("GPU_DP_", "OTEL_")):
            monkeypatch.delenv(name)
    # `serve` would point the root logger at CliRunner's stream, which outlives the test.
    monkeypatch.setattr(cli_main, "configure_logging", lambda **_: None)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
    """Stands in for the daemon: records the ServeConfig `serve` would run with."""
    configs: list[ServeConfig] = []

    async def record(config: ServeConfig, *_: object, **__: object) -> None:
        configs.append(config)

    monkeypatch.setattr(serve_module, "serve", record)
    return configs
