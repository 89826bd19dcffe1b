"""Helpers of the cluster tests: a recorded sleep, a session on the fake API server, task scaffolding.

Kept out of conftest.py on purpose (one conftest for the whole suite).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import yaml

from gpu_device_plugin.backends.fake.spec import parse_fake_config, to_inventory
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.cluster.tasks import connect
from gpu_device_plugin.inventory import Device, Inventory, MigDevice, MigMode, MigProfile
from testsupport.fakeapi import FakeApiServer

NODE = "gpu-node-1"
PREFIX = "example.com/gpu."
#: No jitter: the delays a test sees are exactly the schedule.
EXACT_BACKOFF = Backoff(initial_s=1.0, cap_s=8.0, jitter=0.0)


class Sleeps:
    """An injected sleep: records each delay and returns at once (after one turn of the loop)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def session_for(api: FakeApiServer, folder: Path) -> ClusterSession:
    """The production connection (kubernetes client, kubeconfig file) to the fake server."""
    kubeconfig = api.write_kubeconfig(folder / "kubeconfig")
    return ClusterSession(lambda: connect(kubeconfig))


def fake_inventory(**config: Any) -> Inventory:
    return to_inventory(parse_fake_config(yaml.safe_dump(config or {"count": 4}), source="test"))


#: What NVML reports for some A100 80GB profiles' memory.
MIG_MEMORY_MIB = {"1g.10gb": 9856, "2g.20gb": 19968, "3g.40gb": 40192, "7g.80gb": 80896}


def mig_inventory(layout: dict[int, list[str]], whole: int = 0) -> Inventory:
    """A100 80GB GPUs: those in `layout` MIG-enabled with the named profiles, then `whole` whole ones."""
    devices: list[Device] = []
    migs: list[MigDevice] = []
    for index in range(len(layout) + whole):
        profiles = layout.get(index)
        devices.append(
            Device(
                id=f"GPU-{index}",
                index=index,
                uuid=f"GPU-{index}",
                model="NVIDIA A100-SXM4-80GB",
                memory_mib=81920,
                mig_capable=True,
                mig_mode=MigMode(current=profiles is not None, pending=profiles is not None),
            )
        )
        for n, name in enumerate(profiles or ()):
            slices = int(name.split("g.")[0])
            memory = MIG_MEMORY_MIB.get(name, slices * 9856)
            profile = MigProfile(name, gi_slices=slices, ci_slices=slices, memory_mib=memory)
            migs.append(MigDevice(f"MIG-{index}-{n}", f"MIG-{index}-{n}", f"GPU-{index}", n, profile, n, 0))
    return Inventory(devices=tuple(devices), backend="nvml", mig_devices=tuple(migs))


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a root task for the body; fail the test if it ended with an error, cancel it after."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
