"""Applying the per-node config live: on a label, file, folder or inventory-shape change, a diff.

Every change is handled the same way: choose the config (selection.py), load
and validate it (the CLI's loader: the same flag > env > file > default path as
at start), plan the resources for it and the current inventory, and only then
touch anything. A config that fails any step changes nothing: the old one keeps
being served, and the refusal is reported three ways (a WARNING line, a Warning
Event `ConfigRejected` on the Node naming the file, key and reason, and the
`config_changes{result="rejected"}` counter). A valid one is applied as a diff
(server/fleet.py): unchanged resources are not touched, so their allocatable
never dips; a Normal Event `ConfigApplied` names the config and what changed.

`applied` holds the ResourceSettings being served, so what follows the config
(the node labels) reads it the way the servers read the inventory cell. The
inventory's shape (which devices and MIG devices exist, not their health) is
followed too: a MIG layout change replans under the same config.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell
from gpu_device_plugin.inventory.cell import Watchable
from gpu_device_plugin.live.config import LiveConfig
from gpu_device_plugin.live.folder import ConfigFolder
from gpu_device_plugin.live.selection import Selection, SelectionError, select_config
from gpu_device_plugin.resources.diff import PlanDiff
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.settings import ResourceSettings
from gpu_device_plugin.server.fleet import ResourceFleet
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)

APPLIED = "applied"
UNCHANGED = "unchanged"
REJECTED = "rejected"


@dataclass(frozen=True)
class LoadedConfig:
    """One config read and validated: what can change live, and what applies only at start."""

    settings: ResourceSettings
    # The other fields of the daemon's config (discovery, health, ...), by name: a config
    # change that alters one is applied for the resources and logged as needing a restart.
    rest: Mapping[str, object]
    # The whole daemon config (the CLI's ServeConfig): what the process starts with.
    full: Any = field(default=None, compare=False)
    # The effective configuration, each value with its source: logged once at start.
    line: str = field(default="", compare=False)


#: The config file (None: the flags alone) -> its config; ConfigError(file key, reason) when bad.
Loader = Callable[[Path | None], LoadedConfig]
Planner = Callable[[ResourceSettings, Inventory], tuple[ResourceManager, ...]]
Labels = Mapping[str, str]


class ConfigReporter(Protocol):
    """Where applied and rejected configs are told to the cluster (Events on the Node)."""

    def applied(self, config: str, message: str) -> None: ...

    def rejected(self, config: str, message: str) -> None: ...


class NoReporter:
    def applied(self, config: str, message: str) -> None:
        pass

    def rejected(self, config: str, message: str) -> None:
        pass


class Rejected(Exception):
    def __init__(self, config: str, message: str) -> None:
        super().__init__(message)
        self.config = config
        self.message = message


def inventory_shape(inventory: Inventory) -> Inventory:
    """The inventory without health: what the plan may depend on (a health change never replans)."""
    return replace(
        inventory,
        devices=tuple(replace(d, health=Health.HEALTHY, health_reason="") for d in inventory.devices),
    )


async def shape_changes(cell: SnapshotCell[Inventory]) -> AsyncIterator[Inventory]:
    """Each inventory the cell publishes whose shape differs from the last one seen."""
    last = inventory_shape(cell.value)
    async for inventory in cell.watch():
        shape = inventory_shape(inventory)
        if shape != last:
            last = shape
            yield inventory


@dataclass(frozen=True)
class Loaded:
    selection: Selection
    path: Path | None
    loaded: LoadedConfig


@dataclass(frozen=True)
class Chosen(Loaded):
    plan: tuple[ResourceManager, ...]


def load_selected(live: LiveConfig, label: str | None, load: Loader) -> Loaded:
    """Choose the config for the label's value and load it; Rejected when either fails."""
    folder = ConfigFolder(live.config_dir)
    try:
        selection = select_config(
            label, folder.names(), label_key=live.node_label, default=live.default_config
        )
    except SelectionError as err:
        raise Rejected(label or live.default_config or "(none)", str(err)) from err
    path = folder.file(selection.name) if selection.name is not None else None
    try:
        return Loaded(selection, path, load(path))
    except ConfigError as err:
        raise Rejected(selection.shown, _refusal(selection, path, err)) from err


def _refusal(selection: Selection, path: Path | None, err: ConfigError) -> str:
    where = f"{path}: {err.field}" if path is not None and err.field else str(path or err.field)
    return f"config {selection.shown} ({where}): {err.reason}"


def load_at_start(live: LiveConfig, label: str | None, load: Loader) -> Loaded:
    """load_selected for the start: a refusal is a ConfigError (exit 2, as a bad --config-file)."""
    try:
        return load_selected(live, label, load)
    except Rejected as err:
        raise ConfigError("config-dir", err.message) from err


class ConfigReconciler:
    def __init__(
        self,
        *,
        live: LiveConfig,
        load: Loader,
        plan: Planner,
        cell: SnapshotCell[Inventory],
        labels: Watchable[Labels | None] | None = None,
        reporter: ConfigReporter | None = None,
        metrics: MetricsSink = NULL_METRICS,
        rediscover: Callable[[], Awaitable[object]] | None = None,
        start: Loaded,
    ) -> None:
        """`start`: the config chosen at start (load_at_start); planned here on the first
        inventory, ConfigError when it cannot be served (exit 2 at start)."""
        self._live = live
        self._folder = ConfigFolder(live.config_dir)
        self._load = load
        self._plan = plan
        self._cell = cell
        self._labels = labels
        self._reporter = reporter or NoReporter()
        self._metrics = metrics
        self._rediscover = rediscover
        self._dirty = asyncio.Event()
        self._reasons: list[str] = []
        self._fleet: ResourceFleet | None = None
        try:
            first = self._plan(start.loaded.settings, self._cell.value)
        except ConfigError as err:
            raise ConfigError("config-dir", _refusal(start.selection, start.path, err)) from err
        self._chosen = Chosen(start.selection, start.path, start.loaded, first)
        self._started_rest = start.loaded.rest
        self.applied: SnapshotCell[ResourceSettings] = SnapshotCell(start.loaded.settings)
        """The settings being served."""
        log.info("per-node config: %s (%s)", start.selection.shown, start.selection.why)
        self.handled = 0
        """Changes handled so far, applied or not (tests and benchmarks wait on it)."""
        self.handled_changed = asyncio.Event()

    # ------------------------------------------------------------------ start

    @property
    def plan(self) -> tuple[ResourceManager, ...]:
        """The resources of the config being served."""
        return self._chosen.plan

    def attach(self, fleet: ResourceFleet) -> None:
        self._fleet = fleet

    # -------------------------------------------------------------- following

    async def run(self) -> None:
        assert self._fleet is not None, "attach() comes first"
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_folder(), name="live-config-folder")
            group.create_task(self._follow_shape(), name="live-config-inventory")
            if self._labels is not None:
                group.create_task(self._follow_labels(self._labels), name="live-config-label")
            group.create_task(self._apply_changes(), name="live-config-apply")

    def _changed(self, reason: str) -> None:
        self._reasons.append(reason)
        self._dirty.set()

    async def _follow_folder(self) -> None:
        with self._folder.watch() as watcher:
            while True:
                await watcher.next_changes()
                self._changed(f"folder {self._folder.path} changed")

    async def _follow_labels(self, labels: Watchable[Labels | None]) -> None:
        last: str | None = self._label_of(labels.value)
        async for value in labels.watch():
            if value is None:
                continue
            label = self._label_of(value)
            if label != last:
                last = label
                self._changed(f"label {self._live.node_label}={label or ''}")

    def _label_of(self, labels: Labels | None) -> str | None:
        return None if labels is None else labels.get(self._live.node_label)

    async def _follow_shape(self) -> None:
        async for _ in shape_changes(self._cell):
            self._changed("the devices changed")

    async def _apply_changes(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            reasons, self._reasons = self._reasons, []
            await self.reconcile("; ".join(dict.fromkeys(reasons)))

    # --------------------------------------------------------------- applying

    async def reconcile(self, trigger: str) -> str:
        """Choose, load, plan, then apply; the result (applied, unchanged or rejected)."""
        assert self._fleet is not None, "attach() comes first"
        try:
            if self._rediscover is not None and "the devices changed" not in trigger:
                await self._rediscover()  # a config change looks at the MIG layout again too
            label = self._label_of(self._labels.value) if self._labels is not None else None
            chosen = self._choose(label)
        except Rejected as err:
            result = self._reject(err, trigger)
        else:
            result = await self._apply(chosen, trigger)
        self._metrics.config_change(result)
        self.handled += 1
        self.handled_changed.set()
        self.handled_changed = asyncio.Event()
        return result

    def _choose(self, label: str | None) -> Chosen:
        found = load_selected(self._live, label, self._load)
        try:
            plan = self._plan(found.loaded.settings, self._cell.value)
        except ConfigError as err:
            raise Rejected(found.selection.shown, _refusal(found.selection, found.path, err)) from err
        return Chosen(found.selection, found.path, found.loaded, plan)

    def _reject(self, err: Rejected, trigger: str) -> str:
        log.warning(
            "per-node config rejected (%s): %s; still serving config %s",
            trigger,
            err.message,
            self._chosen.selection.shown,
        )
        self._reporter.rejected(
            err.config, f"{err.message}; still serving config {self._chosen.selection.shown}"
        )
        return REJECTED

    async def _apply(self, chosen: Chosen, trigger: str) -> str:
        assert self._fleet is not None, "attach() comes first"
        before = self._chosen
        diff: PlanDiff = await self._fleet.apply(chosen.plan)
        self._chosen = chosen
        self.applied.publish(chosen.loaded.settings)
        if not diff.changed and before.selection.name == chosen.selection.name:
            log.debug("per-node config %s: nothing changed (%s)", chosen.selection.shown, trigger)
            return UNCHANGED
        restart = sorted(
            name for name, value in chosen.loaded.rest.items() if self._started_rest.get(name) != value
        )
        message = f"config {chosen.selection.shown} applied ({chosen.selection.why}): {diff.summary()}"
        if restart:
            message += f"; takes effect only at the next start: {', '.join(restart)}"
        log.info("per-node config: %s (after: %s)", message, trigger)
        self._reporter.applied(chosen.selection.shown, message)
        return APPLIED
