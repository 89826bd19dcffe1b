"""The per-node config end to end in one process: serve with --config-dir against the fake API server.

`live_plugin` parses a real `serve` command line (so the loader is the CLI's,
with its flag > env > file > default layering), starts `serve` beside the
stand-in kubelet and yields its running parts. `write_configmap` writes a
folder the way the kubelet updates a ConfigMap volume: the keys in a fresh
hidden folder, the `..data` link renamed onto it, one `<key> -> ..data/<key>`
link per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gpu_device_plugin.cli.layers import FlagLayers
from gpu_device_plugin.cli.main import config_loader
from gpu_device_plugin.cli.main import serve as serve_command
from gpu_device_plugin.cli.serve import Running, serve
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.telemetry.metrics import Metrics
from gpu_device_plugin.telemetry.tracing import noop_tracing
from testsupport.fakeapi import FakeApiServer

NODE = "gpu-node-1"
LABEL = "nvidia.com/device-plugin.config"

# NVIDIA's resources.gpus names only nvidia.com/ resources; ours are set in our own section.
WHOLE = "version: v1\ngpuDevicePlugin:\n  resourceName: example.com/gpu\n"
RENAMED = "version: v1\ngpuDevicePlugin:\n  resourceName: example.com/renamed\n"
BY_INDEX = WHOLE + "flags:\n  plugin:\n    deviceIDStrategy: index\n"
BAD_KEY = "version: v1\nflags:\n  migStrateg: none\n"
# NVIDIA's file time-slices only nvidia.com/ resources: the configs that switch between
# whole and time-sliced GPUs serve nvidia.com/gpu.
WHOLE_NVIDIA = "version: v1\ngpuDevicePlugin:\n  resourceName: nvidia.com/gpu\n"
# Each GPU 4 ways, under the same name (so the same registration and stream).
TIMESLICE_4 = (
    WHOLE_NVIDIA
    + "sharing:\n  timeSlicing:\n    resources:\n      - name: nvidia.com/gpu\n        replicas: 4\n"
)


def write_configs(folder: Path, configs: Mapping[str, str]) -> None:
    """A plain folder of files (not a ConfigMap): each written whole, by rename."""
    folder.mkdir(exist_ok=True)
    for name, text in configs.items():
        scratch = folder / f".{name}.tmp"
        scratch.write_text(text)
        scratch.replace(folder / name)


def write_configmap(folder: Path, configs: Mapping[str, str]) -> None:
    """What the kubelet's atomic writer does to a ConfigMap volume on an update."""
    folder.mkdir(exist_ok=True)
    stamp = folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for name, text in configs.items():
        (stamp / name).write_text(text)
    data = folder / "..data"
    old = data.resolve() if data.is_symlink() else None
    scratch = folder / "..data_tmp"
    scratch.symlink_to(stamp.name)
    os.replace(scratch, data)
    for name in configs:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in folder.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in configs:
            entry.unlink()
    if old is not None and old.is_dir():
        for child in old.iterdir():
            child.unlink()
        old.rmdir()


@contextlib.asynccontextmanager
async def live_plugin(
    *,
    api: FakeApiServer,
    plugin_dir: Path,
    config_dir: Path,
    fake_config: Path,
    args: Sequence[str] = (),
    plan: Any = plan_resources,
    metrics: Metrics | None = None,
) -> AsyncIterator[Running]:
    kubeconfig = api.write_kubeconfig(config_dir.parent / "kubeconfig")
    argv = [
        "--fake-config",
        str(fake_config),
        "--device-plugin-dir",
        str(plugin_dir),
        "--config-dir",
        str(config_dir),
        "--node-name",
        NODE,
        "--kubeconfig",
        str(kubeconfig),
        *(["--metrics-address", "127.0.0.1:0"] if metrics is not None else []),
        *args,
    ]
    ctx = serve_command.make_context("serve", argv)
    with ctx:
        load = config_loader(FlagLayers.of(ctx))
        config = load(None).full
    stop = asyncio.Event()
    started: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(config, noop_tracing(), stop, load_config=load, started=started, plan=plan, metrics=metrics)
    )
    done, _ = await asyncio.wait([started, task], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # its error, if it ended with one
        raise AssertionError("serve ended before it started")
    if started not in done:
        raise AssertionError("serve did not start within 15 s")
    try:
        yield started.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def handled(running: Running, count: int, timeout: float = 10.0) -> None:
    """Wait until the reconciler has handled `count` changes."""
    reconciler = running.reconciler
    assert reconciler is not None

    async def until() -> None:
        while reconciler.handled < count:
            await reconciler.handled_changed.wait()

    await asyncio.wait_for(until(), timeout)
