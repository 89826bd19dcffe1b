"""The NVML health loop against a fake NVML: events, probes, hangs, recovery, shutdown.

The fake's handles are ctypes pointers as pynvml's are (testsupport/fake_nvml.py),
so the loop meets pynvml's types here: the events thread of issue 13, which keyed
a dict by handle and died of "unhashable type" at start, fails every event test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpu_device_plugin.backends.nvml.health import (
    WAIT_FAILURES_BEFORE_RESTART,
    NvmlHealthSource,
    handle_address,
)
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.health.status import NVML_EVENTS, HealthCheckStatus
from gpu_device_plugin.health.tracker import HealthTracker, Recovery, RecoveryPolicy
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from testsupport.fake_nvml import ERROR_GPU_IS_LOST, ERROR_NOT_SUPPORTED, ERROR_UNKNOWN, FakeGpu, FakeNvml
from testsupport.waiting import eventually

# Restarts come fast in tests; the delays themselves are Backoff's to test.
QUICK = Backoff(initial_s=0.01, cap_s=0.05, jitter=0)
HEALTH_LOG = "gpu_device_plugin.backends.nvml.health"
#: The call the loop probes each GPU with.
PROBE = "nvmlDeviceGetMemoryInfo"

UUIDS = ["GPU-a", "GPU-b", "GPU-c"]


@dataclass
class Loop:
    nvml: FakeNvml
    cell: SnapshotCell[Inventory]
    task: asyncio.Task[None]
    status: HealthCheckStatus

    def health(self, uuid: str) -> tuple[Health, str]:
        device = self.cell.value.by_id[uuid]
        return device.health, device.health_reason

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> None:
        async def wait() -> None:
            async for _ in self.cell.watch():
                if check():
                    return

        await asyncio.wait_for(wait(), timeout)

    async def until_status(self, check: Callable[[dict[str, str]], bool], timeout: float = 3.0) -> None:
        async def wait() -> None:
            async for degraded in self.status.cell.watch():
                if check(dict(degraded)):
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
        nvml: FakeNvml | None = None,
        discovered: dict[str, str] | None = None,
    ) -> Loop:
        nvml = nvml or FakeNvml(gpus or [FakeGpu(u) for u in UUIDS])
        # discovered: devices that discovery already found unhealthy, with the reason.
        unhealthy = discovered or {}
        inventory = Inventory(
            devices=tuple(
                Device(
                    id=g.uuid,
                    index=i,
                    uuid=g.uuid,
                    health=Health.UNHEALTHY if g.uuid in unhealthy else Health.HEALTHY,
                    health_reason=unhealthy.get(g.uuid, ""),
                )
                for i, g in enumerate(nvml.gpus)
            ),
            backend="nvml",
        )
        cell = SnapshotCell(inventory)
        status = HealthCheckStatus([NVML_EVENTS])
        source = NvmlHealthSource(
            session=NvmlSession(nvml),  # type: ignore[arg-type]
            cell=cell,
            tracker=HealthTracker(RecoveryPolicy(mode=mode, quiet_period_s=quiet)),
            probe_interval_s=probe_interval,
            call_timeout_s=call_timeout,
            event_wait_ms=50,
            status=status,
            restart_backoff=QUICK,
        )
        ready = asyncio.Event()
        loop = Loop(nvml, cell, asyncio.create_task(source.run(ready=ready)), status)
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
    loop = await start_loop([FakeGpu("GPU-a"), FakeGpu("GPU-b", errors={PROBE: ERROR_GPU_IS_LOST})])
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


@dataclass
class EnteringHangs(FakeNvml):
    """FakeNvml that also says when a probe has entered its hang."""

    entered: threading.Event = field(default_factory=threading.Event)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        if self.gpus[self._i(handle)].hang is not None:
            self.entered.set()
        return super().nvmlDeviceGetMemoryInfo(handle)


async def test_stopping_during_a_hung_probe_round_cancels_the_round(start_loop) -> None:
    hang = threading.Event()
    nvml = EnteringHangs([FakeGpu("GPU-a", hang=hang), FakeGpu("GPU-b")])
    # A call bound far beyond the test: the round is still waiting on GPU-a when stopped.
    loop = await start_loop(nvml=nvml, call_timeout=120)
    try:
        assert await asyncio.to_thread(nvml.entered.wait, 5)
        loop.nvml.emit_xid("GPU-b", 79)
        await loop.until(lambda: loop.health("GPU-b")[0] is Health.UNHEALTHY)
        loop.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(loop.task, 2)
        assert loop.task.done()
        # No probe task outlives the loop.
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "nvml-probes"]
        assert loop.health("GPU-a")[0] is Health.HEALTHY  # never judged: its call never ended
    finally:
        hang.set()


async def test_device_without_event_support_is_still_probed(start_loop) -> None:
    loop = await start_loop(
        [FakeGpu("GPU-a", errors={"nvmlDeviceRegisterEvents": ERROR_NOT_SUPPORTED}), FakeGpu("GPU-b")]
    )
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
    assert loop.nvml.freed_all


def test_the_fake_hands_out_handles_as_pynvml_does() -> None:
    # The premise of every test here: if the fake's handles were hashable or equal
    # by value, the loop could key them and these tests would not see it.
    nvml = FakeNvml([FakeGpu("GPU-a")])
    first, second = nvml.nvmlDeviceGetHandleByUUID("GPU-a"), nvml.nvmlDeviceGetHandleByUUID("GPU-a")
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)
    with pytest.raises(TypeError, match="unhashable"):
        hash(nvml.nvmlEventSetCreate())
    assert first != second, "two handles of one GPU are not equal, as two ctypes pointers are not"
    assert handle_address(first) == handle_address(second) is not None


async def test_an_event_names_its_gpu_by_address_even_when_the_gpu_answers_nothing(start_loop) -> None:
    # XID 79: the GPU fell off the bus; asking it for its UUID fails, its address still names it.
    loop = await start_loop(
        [FakeGpu("GPU-a"), FakeGpu("GPU-b", errors={"nvmlDeviceGetUUID": ERROR_GPU_IS_LOST})]
    )
    loop.nvml.emit_xid("GPU-b", 79)
    await loop.until(lambda: loop.health("GPU-b")[0] is Health.UNHEALTHY)
    assert loop.health("GPU-b") == (Health.UNHEALTHY, "XID 79 (GPU has fallen off the bus)")
    assert loop.health("GPU-a")[0] is Health.HEALTHY


async def test_a_dead_events_thread_is_logged_degraded_and_restarted(
    start_loop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=HEALTH_LOG)
    loop = await start_loop()
    assert loop.status.ok
    loop.nvml.emit_xid("GPU-a", 79)
    await loop.until(lambda: loop.health("GPU-a")[0] is Health.UNHEALTHY)

    loop.nvml.crash_next_wait(RuntimeError("the bindings broke"))
    await loop.until_status(lambda d: NVML_EVENTS in d)
    assert loop.status.degraded[NVML_EVENTS] == "RuntimeError: the bindings broke"
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "nvml-events stopped: RuntimeError: the bindings broke" in record.getMessage()
    assert record.exc_info is not None, "the traceback is logged"
    # While it is down, devices keep their last known health.
    assert loop.health("GPU-a")[0] is Health.UNHEALTHY
    assert loop.health("GPU-b")[0] is Health.HEALTHY

    # Restarted after the backoff: events flow again, and the degraded mark is gone.
    await loop.until_status(lambda d: not d)
    assert loop.nvml.created == 2
    loop.nvml.emit_xid("GPU-c", 48)
    await loop.until(lambda: loop.health("GPU-c")[0] is Health.UNHEALTHY)


async def test_an_event_wait_that_keeps_failing_rebuilds_the_event_set(start_loop) -> None:
    nvml = FakeNvml([FakeGpu(u) for u in UUIDS])
    nvml.wait_errors.extend([ERROR_UNKNOWN] * WAIT_FAILURES_BEFORE_RESTART)
    loop = await start_loop(nvml=nvml)
    await loop.until_status(lambda d: NVML_EVENTS in d)
    assert "failed 3 times in a row" in loop.status.degraded[NVML_EVENTS]
    await loop.until_status(lambda d: not d)
    loop.nvml.emit_xid("GPU-a", 79)
    await loop.until(lambda: loop.health("GPU-a")[0] is Health.UNHEALTHY)
    await eventually(lambda: nvml.freed >= 1, what="the broken event set freed")


async def test_events_not_supported_is_a_fact_not_a_fault(start_loop) -> None:
    nvml = FakeNvml([FakeGpu("GPU-a", errors={PROBE: ERROR_GPU_IS_LOST}), FakeGpu("GPU-b")])
    nvml.errors["nvmlEventSetCreate"] = ERROR_NOT_SUPPORTED
    loop = await start_loop(nvml=nvml)
    await loop.until(lambda: loop.health("GPU-a") == (Health.UNHEALTHY, "GPU is lost"))
    assert loop.status.ok
    assert nvml.created == 0


async def test_an_event_set_that_cannot_be_made_is_degraded_and_retried(start_loop) -> None:
    nvml = FakeNvml([FakeGpu(u) for u in UUIDS])
    nvml.errors["nvmlEventSetCreate"] = ERROR_UNKNOWN
    loop = await start_loop(nvml=nvml)
    await loop.until_status(lambda d: NVML_EVENTS in d)
    del nvml.errors["nvmlEventSetCreate"]
    await loop.until_status(lambda d: not d)
    loop.nvml.emit_double_bit_ecc("GPU-b")
    await loop.until(lambda: loop.health("GPU-b") == (Health.UNHEALTHY, "double-bit ECC error"))


async def test_a_gpu_found_lost_at_discovery_waits_out_the_quiet_period(start_loop) -> None:
    # Discovery said lost; the probes now answer. It comes back only after the quiet period.
    loop = await start_loop(quiet=0.3, discovered={"GPU-b": "GPU is lost"})
    assert loop.health("GPU-b") == (Health.UNHEALTHY, "GPU is lost")
    started = asyncio.get_running_loop().time()
    await loop.until(lambda: loop.health("GPU-b")[0] is Health.HEALTHY)
    assert asyncio.get_running_loop().time() - started >= 0.25
