"""Shared fixtures: a fake-GPU config file, a test kubelet, the plugin in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.serve import Running, serve
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry.metrics import Metrics, MetricsSink
from gpu_device_plugin.telemetry.tracing import Tracing, noop_tracing
from testsupport.fakegpus import write_fake_config
from testsupport.spans import SpanRecorder

# The C NVML fake's fixtures (nvml_fake_lib, fake_driver, fake_pynvml): testsupport/nvmlfake_fixtures.py.
pytest_plugins = ["testsupport.nvmlfake_fixtures", "testsupport.cli_fixtures"]

FakeFile = Callable[..., None]


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be long.
    folder = Path(f"/tmp/gdp-{tmp_path.name[-20:]}-{id(tmp_path) % 10_000}")
    folder.mkdir()
    yield folder
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


@pytest.fixture
def fake_config(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "gpus.yaml"
    path.parent.mkdir()
    write_fake_config(path)
    return path


@pytest.fixture
async def kubelet(plugin_dir: Path) -> AsyncIterator[StandinKubelet]:
    sim = StandinKubelet(plugin_dir)
    await sim.start()
    yield sim
    await sim.stop()


class RunningPlugin:
    def __init__(
        self, task: asyncio.Task[None], stop: asyncio.Event, started: asyncio.Future[Running]
    ) -> None:
        self.task = task
        self.stop = stop
        #: the running parts (its inventory cell, its fleet), once it serves
        self.started = started

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def start_plugin(plugin_dir: Path) -> AsyncIterator[Callable[..., RunningPlugin]]:
    running: list[RunningPlugin] = []

    def start(
        config_file: Path,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
        otlp_metrics: MetricsSink | None = None,
        **overrides: object,
    ) -> RunningPlugin:
        config = ServeConfig(
            discovery=DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_config=config_file),
            device_plugin_dir=plugin_dir,
            **overrides,  # type: ignore[arg-type]
        )
        stop = asyncio.Event()
        started: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(
                config,
                tracing or noop_tracing(),
                stop,
                metrics=metrics,
                otlp_metrics=otlp_metrics,
                started=started,
            )
        )
        plugin = RunningPlugin(task, stop, started)
        running.append(plugin)
        return plugin

    yield start
    for plugin in running:
        if not plugin.task.done():
            with contextlib.suppress(Exception):
                await plugin.shutdown()


@pytest.fixture
def recorder() -> SpanRecorder:
    """Spans in memory, from the SDK's TracerProvider as the plugin uses it."""
    return SpanRecorder()
