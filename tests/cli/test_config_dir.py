"""`serve --config-dir`: its flags, its refusals, and flag > env > file > default as a function.

The loader `serve` reloads with (layers.py) is checked against what start-up
with `--config-file` gives for the same file, so a named config means at
runtime exactly what it means at start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_error_line, run

from gpu_device_plugin.cli import serve as serve_module
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.layers import FlagLayers
from gpu_device_plugin.cli.main import config_loader
from gpu_device_plugin.cli.main import serve as serve_command
from gpu_device_plugin.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "config" / "fixtures" / "nvidia"
FAKE = ("--discovery", "fake", "--fake-devices", "2")


@pytest.fixture(autouse=True)
def _clean(clean_environment: None) -> None:
    """Every test here starts without the caller's GPU_DP_*/OTEL_* and logging set-up."""


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ServeConfig, dict[str, Any]]]:
    """Stands in for the daemon: what `serve` would run with, and its keyword arguments."""
    calls: list[tuple[ServeConfig, dict[str, Any]]] = []

    async def record(config: ServeConfig, *_: object, **kwargs: Any) -> None:
        calls.append((config, kwargs))

    monkeypatch.setattr(serve_module, "serve", record)
    return calls


def loader(
    *args: str, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> Callable[[Path | None], Any]:
    if monkeypatch is not None:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
    ctx = serve_command.make_context("serve", list(args))
    with ctx:
        return config_loader(FlagLayers.of(ctx))


def test_config_dir_with_a_config_file_exits_2(tmp_path: Path, started: list[Any]) -> None:
    (tmp_path / "whole").write_text("version: v1\n")
    result = run(
        "serve",
        *FAKE,
        "--node-name",
        "n",
        "--config-dir",
        str(tmp_path),
        "--config-file",
        str(tmp_path / "whole"),
    )
    assert result.exit_code == 2
    one_error_line(result.stderr, "--config-dir and a config file", "give one")
    assert started == []


def test_config_dir_needs_the_node_name(tmp_path: Path, started: list[Any]) -> None:
    result = run("serve", *FAKE, "--config-dir", str(tmp_path))
    assert result.exit_code == 2
    one_error_line(result.stderr, "node-name", "--config-dir needs this node's name")
    assert started == []


def test_serve_gets_the_loader_and_the_flags_alone_config(tmp_path: Path, started: list[Any]) -> None:
    result = run("serve", *FAKE, "--node-name", "n", "--config-dir", str(tmp_path), "--default-config", "x")
    assert result.exit_code == 0, result.stderr
    config, kwargs = started[0]
    assert config.live is not None
    assert config.live.config_dir == tmp_path
    assert config.live.default_config == "x"
    assert config.live.node_label == "nvidia.com/device-plugin.config"
    assert callable(kwargs["load_config"])


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = tmp_path / "named"
    named.write_text(
        "version: v1\ngpuDevicePlugin:\n  resourceName: example.com/file\n  healthQuietPeriod: 7\n"
        "  healthProbeInterval: 3\n"
    )
    load = loader(
        *FAKE,
        "--node-name",
        "n",
        "--config-dir",
        str(tmp_path),
        "--health-quiet-period",
        "5",
        env={"GPU_DP_HEALTH_PROBE_INTERVAL": "2"},
        monkeypatch=monkeypatch,
    )
    loaded = load(named)
    config: ServeConfig = loaded.full
    assert config.health.recovery.quiet_period_s == 5  # flag over file
    assert config.health.probe_interval_s == 2  # env over file
    assert config.resource_name == "example.com/file"  # file over default
    assert config.health.ignored_xids == load(None).full.health.ignored_xids  # default
    assert "resource-name=example.com/file (file: gpuDevicePlugin.resourceName)" in loaded.line
    assert "health-quiet-period=5.0 (flag)" in loaded.line
    # With no file, the default again: a reload really starts from the layers, not the last file.
    assert load(None).full.resource_name == "example.com/gpu"


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_the_loader_means_what_config_file_means_at_start(
    fixture: str, started: list[Any], tmp_path: Path
) -> None:
    path = FIXTURES / fixture
    result = run("serve", *FAKE, "--config-file", str(path))
    if result.exit_code != 0:
        # A file --config-file refuses, the loader refuses too, naming the same key.
        with pytest.raises(ConfigError) as refused:
            loader(*FAKE, "--node-name", "n", "--config-dir", str(tmp_path))(path)
        assert str(refused.value.field) in result.stderr
        return
    at_start, _ = started[0]
    loaded: ServeConfig = loader(*FAKE, "--config-dir", str(tmp_path), "--node-name", "n")(path).full
    assert loaded.resources == at_start.resources
    assert loaded.health == at_start.health
    assert loaded.discovery == at_start.discovery
    assert loaded.device_plugin_dir == at_start.device_plugin_dir


def test_a_bad_value_in_a_named_config_names_its_key(tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.write_text("version: v1\ngpuDevicePlugin:\n  healthQuietPeriod: -1\n")
    with pytest.raises(ConfigError) as refused:
        loader(*FAKE, "--node-name", "n", "--config-dir", str(tmp_path))(named)
    assert refused.value.field == "gpuDevicePlugin.healthQuietPeriod"
