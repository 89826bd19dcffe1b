"""The plugin's side of MPS: a resource's GPUs are allocatable only while its control daemon is ready.

A DaemonGate follows the one inventory cell and the resource's ready file (an
inotify watch of its folder, armed before the first read) and publishes into a
cell of its own the same snapshot, except that while the daemon is not ready
(no ready file, or one written for another plan) the daemon's GPUs are Unhealthy
with the reason "MPS control daemon not ready". The resource's plugin server
follows that cell instead of the shared one, so its replicas go Unhealthy and
back like any health change, and Allocate refuses them meanwhile: a container
started without a daemon would run with no MPS limits at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gpu_device_plugin.fswatch import FolderWatch
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell
from gpu_device_plugin.mps.plan import DaemonPlan

log = logging.getLogger(__name__)

NOT_READY = "MPS control daemon not ready"


def readiness(ready_file: Path, plan: DaemonPlan) -> str | None:
    """None when the daemon is ready as `plan` says; else why it is not."""
    try:
        text = ready_file.read_text()
    except FileNotFoundError:
        return NOT_READY
    except OSError as err:
        return f"{NOT_READY} (cannot read {ready_file}: {err.strerror or err})"
    if not plan.matches(text):
        return f"{NOT_READY} (it was configured for other limits or GPUs: {ready_file})"
    return None


def gate(inventory: Inventory, plan: DaemonPlan, reason: str | None) -> Inventory:
    """`inventory`, with the plan's healthy GPUs Unhealthy for `reason` (None: unchanged)."""
    if reason is None:
        return inventory
    uuids = set(plan.uuids)
    devices = tuple(
        replace(d, health=Health.UNHEALTHY, health_reason=reason) if d.uuid in uuids and d.healthy else d
        for d in inventory.devices
    )
    return replace(inventory, devices=devices)


class DaemonGate:
    """`cell`: the source's snapshots as this resource may serve them, given its daemon's readiness."""

    def __init__(
        self,
        source: SnapshotCell[Inventory],
        ready_file: Path,
        plan_of: Callable[[Inventory], DaemonPlan],
    ) -> None:
        self.source = source
        self.ready_file = ready_file
        self.plan_of = plan_of
        self.reason = readiness(ready_file, plan_of(source.value))
        self.cell = SnapshotCell(gate(source.value, plan_of(source.value), self.reason))

    async def follow(self, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled; `ready` is set once the watch is armed and the file read."""
        folder = self.ready_file.parent
        folder.mkdir(parents=True, exist_ok=True)
        with FolderWatch(folder, names={self.ready_file.name}) as watch:
            inventory = self.source.value
            self._update(inventory, first=True)
            if ready is not None:
                ready.set()
            snapshots = aiter(self.source.watch())
            next_snapshot = asyncio.ensure_future(anext(snapshots))
            next_change = asyncio.ensure_future(watch.next_changes())
            try:
                while True:
                    await asyncio.wait({next_snapshot, next_change}, return_when=asyncio.FIRST_COMPLETED)
                    if next_snapshot.done():
                        inventory = next_snapshot.result()
                        next_snapshot = asyncio.ensure_future(anext(snapshots))
                    if next_change.done():
                        next_change.result()
                        next_change = asyncio.ensure_future(watch.next_changes())
                    self._update(inventory)
            finally:
                for pending in (next_snapshot, next_change):
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await pending

    def replan(self, plan_of: Callable[[Inventory], DaemonPlan]) -> None:
        """Gate by another plan from now on (a config change kept the resource, not its
        replicas or GPUs): the ready file is read again, since it names the plan it was
        written for."""
        self.plan_of = plan_of
        self._update(self.source.value)

    def _update(self, inventory: Inventory, *, first: bool = False) -> None:
        plan = self.plan_of(inventory)
        reason = readiness(self.ready_file, plan)
        if reason != self.reason or first:
            if reason is None:
                log.info(
                    "%s: MPS control daemon ready (%s): its devices are allocatable",
                    plan.resource_name,
                    self.ready_file,
                )
            else:
                log.warning("%s: %s: its devices are Unhealthy until it is", plan.resource_name, reason)
        self.reason = reason
        self.cell.publish(gate(inventory, plan, reason))
