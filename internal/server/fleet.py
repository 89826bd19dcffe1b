"""The plugin servers of every resource served, changed while running by applying a new plan.

One task per resource: its PluginSupervisor (server, socket, registration,
kubelet-restart watch) and its device gauges. `apply()` takes a new plan
(resources/plan.py) and applies the diff (resources/diff.py): an unchanged
resource is not touched at all (same server, socket, registration and streams),
a changed one has its manager swapped in place so its open stream publishes
the new devices, a change of options re-registers it, a removed one stops (its
socket goes; the kubelet marks its devices gone) and a new one starts. A
resource's task that fails ends `run()` with its error, as a root task's would:
the daemon must not go on with a resource silently unserved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from opentelemetry import trace

from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.mps.readiness import DaemonGate
from gpu_device_plugin.resources.diff import PlanDiff, diff_plans
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.server.service import DevicePluginService, plugin_options
from gpu_device_plugin.server.supervisor import PluginSupervisor
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink, follow_inventory

log = logging.getLogger(__name__)

#: Called with (resource name, socket) each time a resource's server registers.
OnRegistered = Callable[[str, Path], None]

#: The gate an MPS resource's server follows (made over the shared cell); None for any other resource.
GateFor = Callable[[ResourceManager, SnapshotCell[Inventory]], DaemonGate | None]


@dataclass
class _Served:
    service: DevicePluginService
    supervisor: PluginSupervisor
    task: asyncio.Task[None]
    gate: DaemonGate | None


class ResourceFleet:
    def __init__(
        self,
        *,
        cell: SnapshotCell[Inventory],
        plugin_dir: Path,
        tracer: trace.Tracer,
        server_spans: trace.Tracer | None = None,
        metrics: MetricsSink = NULL_METRICS,
        record_devices: bool = False,
        health: Any = None,
        on_registered: OnRegistered | None = None,
        gate_for: GateFor | None = None,
    ) -> None:
        self._cell = cell
        self._plugin_dir = plugin_dir
        self._tracer = tracer
        self._server_spans = server_spans
        self._metrics = metrics
        # Whether any sink records the device gauges: without one, no task per resource for them.
        self._record_devices = record_devices
        self._health = health
        self._on_registered = on_registered
        self._gate_for = gate_for
        self._served: dict[str, _Served] = {}
        # Resources being stopped, by name: one that comes back waits for its old server first.
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._failed: asyncio.Future[None] | None = None
        self._first: set[str] = set()
        self.registered = asyncio.Event()
        """Set once every resource of the first plan has registered once (the cluster tasks wait)."""

    @property
    def managers(self) -> Mapping[str, ResourceManager]:
        """The managers served now, by resource name."""
        return {name: served.service.devices.manager for name, served in self._served.items()}

    def service(self, name: str) -> DevicePluginService:
        return self._served[name].service

    def supervisor(self, name: str) -> PluginSupervisor:
        return self._served[name].supervisor

    def start(self, plan: Sequence[ResourceManager]) -> None:
        """Serve the first plan (before run())."""
        self._first = {m.resource_name for m in plan}
        for manager in plan:
            self._add(manager)

    async def apply(self, plan: Sequence[ResourceManager]) -> PlanDiff:
        """Serve `plan` instead of what is served, touching only what differs."""
        diff = diff_plans(self.managers, plan, plugin_options)
        # New resources first: their registration need not wait for an old server's grace.
        for manager in diff.add:
            self._add(manager)
        for manager in diff.swap:
            if self._regate(manager):
                self._served[manager.resource_name].service.swap(manager)
        for manager in diff.reregister:
            if self._regate(manager):
                served = self._served[manager.resource_name]
                served.service.swap(manager, reregistering=True)
                served.supervisor.reregister("its options changed with the config")
        for name in diff.remove:
            self._remove(name)
        return diff

    async def run(self) -> None:
        """Until a resource's task fails (its error is raised) or this is cancelled (every server stops)."""
        failed = self._failure()
        try:
            await failed
        finally:
            for name in list(self._served):
                self._remove(name, record=False)
            if self._stopping:
                await asyncio.wait(list(self._stopping.values()))

    def _failure(self) -> asyncio.Future[None]:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    def _gate(self, manager: ResourceManager) -> DaemonGate | None:
        return None if self._gate_for is None else self._gate_for(manager, self._cell)

    def _regate(self, manager: ResourceManager) -> bool:
        """Ready `manager`'s gate for a swap (True), or restart its resource when the swap
        would change which cell its server follows (False: nothing more to do)."""
        name = manager.resource_name
        served = self._served[name]
        gate = self._gate(manager)
        if (gate is None) != (served.gate is None):
            self._remove(name, record=False)
            self._add(manager)
            return False
        if gate is not None and served.gate is not None:
            served.gate.replan(gate.plan_of)
        return True

    def _add(self, manager: ResourceManager) -> None:
        name = manager.resource_name
        gate = self._gate(manager)
        service = DevicePluginService(
            manager=manager, cell=self._cell if gate is None else gate.cell, metrics=self._metrics
        )
        supervisor = PluginSupervisor(
            service=service,
            plugin_dir=self._plugin_dir,
            tracer=self._tracer,
            server_spans=self._server_spans,
            metrics=self._metrics,
            on_registered=lambda path: self._registered(name, path),
            health=self._health,
        )
        # The same name served again before its old server has stopped: that one stops first, or
        # its late disconnect could tear down the new registration (KUBELET.md section 5).
        previous = self._stopping.get(name)
        task = asyncio.create_task(
            self._serve(service, supervisor, gate, previous), name=f"plugin-server {name}"
        )
        task.add_done_callback(self._ended)
        self._served[name] = _Served(service, supervisor, task, gate)

    async def _serve(
        self,
        service: DevicePluginService,
        supervisor: PluginSupervisor,
        gate: DaemonGate | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        async with asyncio.TaskGroup() as group:
            if gate is not None:
                group.create_task(gate.follow(), name=f"mps-ready {service.resource_name}")
            group.create_task(supervisor.run(), name=f"supervisor {service.resource_name}")
            if self._record_devices:
                group.create_task(
                    follow_inventory(self._metrics, service.devices, resource_name=service.resource_name),
                    name=f"metrics {service.resource_name}",
                )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        failed = self._failure()
        if failed.done():
            return
        if error is None:
            failed.set_exception(RuntimeError(f"task {task.get_name()} ended unexpectedly"))
        elif isinstance(error, BaseExceptionGroup):
            failed.set_exception(error.exceptions[0])
        else:
            failed.set_exception(error)

    def _registered(self, name: str, path: Path) -> None:
        self._first.discard(name)
        if not self._first:
            self.registered.set()
        if self._on_registered is not None:
            self._on_registered(name, path)

    def _remove(self, name: str, *, record: bool = True) -> None:
        """Stop serving `name`: its task is cancelled and stops in the background (the server's
        grace for in-flight RPCs), so the other resources' changes need not wait for it."""
        served = self._served.pop(name)
        self._first.discard(name)
        if not self._first:
            self.registered.set()
        # Its streams end now, so its server stops as soon as in-flight calls are answered.
        served.service.devices.close()
        served.task.cancel()
        self._stopping[name] = served.task
        served.task.add_done_callback(lambda task: self._stopped(name, task))
        if record and self._record_devices:
            # A resource no longer served advertises nothing: its gauges say so (its gauge task
            # is cancelled above and records nothing after this).
            self._metrics.inventory(name, replace(self._cell.value, devices=(), mig_devices=()))
        log.info("%s: no longer served", name)

    def _stopped(self, name: str, task: asyncio.Task[None]) -> None:
        if self._stopping.get(name) is task:
            del self._stopping[name]
