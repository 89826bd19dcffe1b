"""The NVML health loop against a fake NVML: events, probes, hangs, recovery, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from gpu_device_plugin.discovery.nvml import NvmlSession
from gpu_device_plugin.health.nvml import ERROR_GPU_IS_LOST, ERROR_NOT_SUPPORTED, NvmlHealthSource
from gpu_device_plugin.health.tracker import HealthTracker, Recovery, RecoveryPolicy
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from health.fake_nvml import FakeGpu, FakeNvml

UUIDS = ["GPU-a", "GPU-b", "GPU-c"]


@dataclass
class Loop:
    nvml: FakeNvml
    cell: SnapshotCell[Inventory]
    task: asyncio.Task[None]

    def health(self, uuid: str) -> tuple[Health, str]:
        device = self.cell.value.by_id[uuid]
        return device.health, device.health_reason

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> None:
        async def wait() -> None:
            async for _ in self.cell.watch():
                if check():
                    return

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def start_loop() -> AsyncIterator[Callable[..., Loop]]:
    loops: list[Loop] = []

    async def start(
        gpus: list[FakeGpu] | None = None,
        *,
        quiet: float = 60.0,
        mode: Recovery = Recovery.AUTO,
        probe_interval: float = 0.05,
        call_timeout: float = 1.0,
    ) -> Loop:
        nvml = FakeNvml(gpus or [FakeGpu(u) for u in UUIDS])
        inventory = Inventory(
            devices=tuple(Device(id=g.uuid, index=i, uuid=g.uuid) for i, g in enumerate(nvml.gpus)),
            backend="nvml",
        )
        cell = SnapshotCell(inventory)
        source = NvmlHealthSource(
            session=NvmlSession(nvml),  # type: ignore[arg-type]
            cell=cell,
            tracker=HealthTracker(RecoveryPolicy(mode=mode, quiet_period_s=quiet)),
            probe_interval_s=probe_interval,
            call_timeout_s=call_timeout,
            event_wait_ms=50,
        )
        ready = asyncio.Event()
        loop = Loop(nvml, cell, asyncio.create_task(source.run(ready=ready)))
        loops.append(loop)
        await asyncio.wait_for(ready.wait(), 5)
        return loop

    yield start  # type: ignore[misc]
    for loop in loops:
        loop.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop.task


async def test_registers_critical_events_on_every_gpu(start_loop) -> None:
    loop = await start_loop()
    assert set(loop.nvml.registered) == set(UUIDS)


async def test_critical_xid_marks_device_unhealthy_with_its_meaning(start_loop) -> None:
    loop = await start_loop()
    loop.nvml.emit_xid("GPU-b", 79)
    await loop.until(lambda: loop.health("GPU-b")[0] is Health.UNHEALTHY)
    assert loop.health("GPU-b") == (Health.UNHEALTHY, "XID 79 (GPU has fallen off the bus)")
    assert loop.health("GPU-a")[0] is Health.HEALTHY


async def test_application_xid_leaves_device_healthy(start_loop) -> None:
    loop = await start_loop()
    loop.nvml.emit_xid("GPU-a", 13)
    loop.nvml.emit_xid("GPU-c", 48)  # events are handled in order: once c is bad, a was seen
    await loop.until(lambda: loop.health("GPU-c")[0] is Health.UNHEALTHY)
    assert loop.health("GPU-a") == (Health.HEALTHY, "")


async def test_double_bit_ecc_marks_unhealthy(start_loop) -> None:
    loop = await start_loop()
    loop.nvml.emit_double_bit_ecc("GPU-a")
    await loop.until(lambda: loop.health("GPU-a") == (Health.UNHEALTHY, "double-bit ECC error"))


async def test_lost_gpu_found_by_probe(start_loop) -> None:
    loop = await start_loop([FakeGpu("GPU-a"), FakeGpu("GPU-b", probe_error=ERROR_GPU_IS_LOST)])
    await loop.until(lambda: loop.health("GPU-b") == (Health.UNHEALTHY, "GPU is lost"))
    assert loop.health("GPU-a")[0] is Health.HEALTHY


async def test_hung_nvml_call_marks_unhealthy_and_does_not_hang_the_loop(start_loop) -> None:
    hang = threading.Event()
    loop = await start_loop([FakeGpu("GPU-a", hang=hang), FakeGpu("GPU-b")], call_timeout=0.2)
    try:
        await loop.until(lambda: loop.health("GPU-a")[0] is Health.UNHEALTHY)
        assert "did not answer within 0.2 s" in loop.health("GPU-a")[1]
        # The loop still handles events while the call is stuck.
        loop.nvml.emit_xid("GPU-b", 79)
        await loop.until(lambda: loop.health("GPU-b")[0] is Health.UNHEALTHY)
        # And it stops promptly even with the call still stuck.
        loop.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(loop.task, 1)
    finally:
        hang.set()


async def test_device_without_event_support_is_still_probed(start_loop) -> None:
    loop = await start_loop([FakeGpu("GPU-a", register_error=ERROR_NOT_SUPPORTED), FakeGpu("GPU-b")])
    assert set(loop.nvml.registered) == {"GPU-b"}
    assert loop.health("GPU-a")[0] is Health.HEALTHY


async def test_recovers_after_quiet_period(start_loop) -> None:
    loop = await start_loop(quiet=0.3)
    loop.nvml.emit_xid("GPU-a", 79)
    await loop.until(lambda: loop.health("GPU-a")[0] is Health.UNHEALTHY)
    started = asyncio.get_running_loop().time()
    await loop.until(lambda: loop.health("GPU-a")[0] is Health.HEALTHY)
    assert asyncio.get_running_loop().time() - started >= 0.25


async def test_never_recovers_with_recovery_never(start_loop) -> None:
    loop = await start_loop(quiet=0.1, mode=Recovery.NEVER)
    loop.nvml.emit_xid("GPU-a", 79)
    await loop.until(lambda: loop.health("GPU-a")[0] is Health.UNHEALTHY)
    with pytest.raises(TimeoutError):
        await loop.until(lambda: loop.health("GPU-a")[0] is Health.HEALTHY, timeout=0.5)


async def test_shutdown_stops_event_thread_and_frees_the_set(start_loop) -> None:
    loop = await start_loop()
    threads = [t for t in threading.enumerate() if t.name == "nvml-events"]
    assert threads
    loop.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop.task
    for thread in threads:
        await asyncio.to_thread(thread.join, 2)
        assert not thread.is_alive()
    assert loop.nvml.freed
