"""DaemonGate: a resource's GPUs are Unhealthy until its daemon's ready file says it runs as planned."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from gpu_device_plugin.mps.plan import DaemonPlan, MpsGpu
from gpu_device_plugin.mps.readiness import NOT_READY, DaemonGate
from gpu_device_plugin.mps.root import MpsRoot

A, B, C = "GPU-a", "GPU-b", "GPU-c"
INVENTORY = Inventory(
    devices=tuple(Device(id=u, index=i, uuid=u, memory_mib=16384) for i, u in enumerate((A, B, C))),
    backend="fake",
)
TIMEOUT = 10.0


def plan_of(inventory: Inventory) -> DaemonPlan:
    """The daemon shares A and B (C is another resource's)."""
    shared = [d for d in inventory.devices if d.uuid in (A, B)]
    return DaemonPlan("example.com/gpu", 2, tuple(MpsGpu(d.uuid, d.memory_mib, 2) for d in shared))


def health(inventory: Inventory) -> dict[str, tuple[str, str]]:
    return {d.id: (d.health.value, d.health_reason) for d in inventory.devices}


async def until(cell: SnapshotCell[Inventory], check: Callable[[Inventory], bool]) -> Inventory:
    async with asyncio.timeout(TIMEOUT):
        async for inventory in cell.watch():
            if check(inventory):
                return inventory
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def following(gate: DaemonGate) -> AsyncIterator[None]:
    armed = asyncio.Event()
    task = asyncio.create_task(gate.follow(armed))
    try:
        await asyncio.wait_for(armed.wait(), TIMEOUT)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ready_of(inventory: Inventory) -> bool:
    return all(d.healthy for d in inventory.devices)


async def test_the_daemons_gpus_are_unhealthy_until_it_is_ready_and_after_it_goes(mps_root: MpsRoot) -> None:
    source = SnapshotCell(INVENTORY)
    ready = Path(mps_root.ready_file("example.com/gpu"))
    gate = DaemonGate(source, ready, plan_of)
    assert health(gate.cell.value) == {
        A: ("Unhealthy", NOT_READY),
        B: ("Unhealthy", NOT_READY),
        C: ("Healthy", ""),
    }
    async with following(gate):
        ready.write_text(plan_of(INVENTORY).ready_text())
        await until(gate.cell, ready_of)
        ready.unlink()
        gone = await until(gate.cell, lambda i: not ready_of(i))
        assert health(gone)[A] == ("Unhealthy", NOT_READY)


async def test_a_ready_file_for_other_limits_keeps_them_unhealthy(mps_root: MpsRoot) -> None:
    source = SnapshotCell(INVENTORY)
    ready = Path(mps_root.ready_file("example.com/gpu"))
    ready.parent.mkdir(parents=True)
    other = DaemonPlan("example.com/gpu", 4, (MpsGpu(A, 16384, 4), MpsGpu(B, 16384, 4)))
    ready.write_text(other.ready_text())
    gate = DaemonGate(source, ready, plan_of)
    assert "configured for other limits" in gate.cell.value.devices[0].health_reason
    async with following(gate):
        ready.write_text(plan_of(INVENTORY).ready_text())
        await until(gate.cell, ready_of)


async def test_health_changes_pass_through_and_a_sick_gpu_keeps_its_own_reason(mps_root: MpsRoot) -> None:
    source = SnapshotCell(INVENTORY)
    ready = Path(mps_root.ready_file("example.com/gpu"))
    gate = DaemonGate(source, ready, plan_of)
    async with following(gate):
        sick = INVENTORY.with_health({A: (Health.UNHEALTHY, "XID 79")})
        source.publish(sick)
        seen = await until(gate.cell, lambda i: i.devices[0].health_reason == "XID 79")
        assert health(seen)[B] == ("Unhealthy", NOT_READY)
        ready.write_text(plan_of(sick).ready_text())
        now = await until(gate.cell, lambda i: i.devices[1].healthy)
        assert health(now) == {A: ("Unhealthy", "XID 79"), B: ("Healthy", ""), C: ("Healthy", "")}
        source.publish(replace(sick, devices=INVENTORY.devices))
        await until(gate.cell, ready_of)
