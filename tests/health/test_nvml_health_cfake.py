"""The NVML health loop on the C NVML fake through the real pynvml: a hung probe delays no event.

A probe round waits up to its call bound for a GPU whose NVML call hangs; the
events of the other GPUs must not wait with it. The loop's call bound here is far
longer than the test's wait, so an XID that waited for the round would not show
in time: it shows while the hung call is still blocked, before the hang's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import ModuleType
from typing import Any

import pytest

from gdp_hack.nvmlfake import FakeDriver
from gpu_device_plugin.backends.nvml.health import NvmlHealthSource
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.health.tracker import HealthTracker, RecoveryPolicy
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell

HUNG_GPU = 1
XID_GPU = 2
# The loop's bound on one NVML call: longer than any wait below, so only a loop that
# judges events beside a hung probe can pass.
CALL_BOUND_S = 120.0


class WatchedMemoryReads:
    """pynvml as it is, noting when the hung GPU's memory read starts and when it returns."""

    def __init__(self, pynvml: ModuleType, hung_uuid: str) -> None:
        self._nv = pynvml
        self._hung = hung_uuid
        self.entered = threading.Event()
        self.returned = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nv, name)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        hung = self._nv.nvmlDeviceGetUUID(handle) == self._hung
        if hung:
            self.entered.set()
        try:
            return self._nv.nvmlDeviceGetMemoryInfo(handle)
        finally:
            if hung:
                self.returned.set()


@pytest.mark.parametrize("fake_driver", ["pcie-4gpu"], indirect=True)
async def test_an_xid_is_published_while_another_gpus_probe_hangs(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    uuids = [nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i)) for i in range(4)]
    cell = SnapshotCell(
        Inventory(devices=tuple(Device(id=u, index=i, uuid=u) for i, u in enumerate(uuids)), backend="nvml")
    )
    lib = WatchedMemoryReads(nv, uuids[HUNG_GPU])
    source = NvmlHealthSource(
        session=NvmlSession(lib),  # type: ignore[arg-type]
        cell=cell,
        tracker=HealthTracker(RecoveryPolicy(quiet_period_s=600)),
        probe_interval_s=0.05,
        call_timeout_s=CALL_BOUND_S,
        event_wait_ms=50,
    )
    fake_driver.hang(HUNG_GPU, 600, functions=["nvmlDeviceGetMemoryInfo"])
    ready = asyncio.Event()
    task = asyncio.create_task(source.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        # The probe round is now blocked in the hung GPU's memory read.
        assert await asyncio.to_thread(lib.entered.wait, 10)
        fake_driver.inject_xid(XID_GPU, 79)

        async def xid_shows() -> None:
            async for inventory in cell.watch():
                if inventory.by_id[uuids[XID_GPU]].health is Health.UNHEALTHY:
                    return

        await asyncio.wait_for(xid_shows(), 20)
        # ... before the hang's end: the hung call has not returned, its GPU is not judged yet.
        assert not lib.returned.is_set()
        devices = cell.value.by_id
        assert "XID 79" in devices[uuids[XID_GPU]].health_reason
        assert devices[uuids[HUNG_GPU]].health is Health.HEALTHY
    finally:
        fake_driver.heal(HUNG_GPU)
        # The hung call returns once healed; pynvml is shut down only after it has.
        assert await asyncio.to_thread(lib.returned.wait, 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # And the events thread has left its wait (within event_wait_ms) before pynvml shuts down.
        for thread in threading.enumerate():
            if thread.name == "nvml-events":
                await asyncio.to_thread(thread.join, 5)
