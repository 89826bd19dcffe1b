"""Wiring for `serve`: each layer built from the config, one plugin server per resource, run together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from gpu_device_plugin.backends.registry import make_backend
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.discovery.backend import DiscoveryBackend
from gpu_device_plugin.discovery.initial import initial_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.health.config import HealthConfig
from gpu_device_plugin.health.source import HealthSource, HealthWiring
from gpu_device_plugin.health.status import HealthCheckStatus
from gpu_device_plugin.health.supervise import keep_running
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.live.reconciler import ConfigReconciler, Loaded, Loader, Planner, load_at_start
from gpu_device_plugin.live.rediscover import rediscover_once, rediscovery
from gpu_device_plugin.live.replan import replan_on_shape
from gpu_device_plugin.mps.readiness import DaemonGate
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.mps import daemon_plan, mps_extension
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.replicated import ReplicatedManager
from gpu_device_plugin.resources.settings import ResourceSettings
from gpu_device_plugin.resources.start import plan_at_start
from gpu_device_plugin.root_tasks import run_root_tasks
from gpu_device_plugin.server.fleet import OnRegistered, ResourceFleet
from gpu_device_plugin.server.health_service import HealthService
from gpu_device_plugin.server.sockets import check_plugin_dir
from gpu_device_plugin.telemetry.metrics import (
    NULL_METRICS,
    Metrics,
    MetricsEndpoint,
    MetricsSink,
    combined,
)
from gpu_device_plugin.telemetry.tracing import Tracing

if TYPE_CHECKING:
    # Types only: the cluster modules are imported when --config-dir or the cluster tasks need them.
    from gpu_device_plugin.cluster.node_watch import Labels, NodeLabelWatch
    from gpu_device_plugin.cluster.session import ClusterSession

log = logging.getLogger(__name__)

# How long the start waits for this Node's labels to pick the per-node config; after it the
# fallback config is served, and the label's config applied live once it is read.
FIRST_LABEL_WAIT_S = 10.0


async def serve(
    config: ServeConfig,
    tracing: Tracing,
    stop: asyncio.Event | None = None,
    *,
    metrics: Metrics | None = None,
    otlp_metrics: MetricsSink | None = None,
    config_line: str | None = None,
    managers: Sequence[ResourceManager] | None = None,
    load_config: Loader | None = None,
    on_registered: OnRegistered | None = None,
    started: asyncio.Future[Running] | None = None,
    plan: Planner = plan_resources,
) -> None:
    """Run until stopped. `metrics`: the object to record into when --metrics-address is set
    (tests pass their own to read its URL); made here when not given. `otlp_metrics`: the
    OTLP sink when OTEL_METRICS_EXPORTER asks for one; everything is recorded into both.
    `config_line`: the effective configuration, logged once discovery has started (so that
    every refusal at start stays one line). `managers`: the resources to serve
    (plan_resources on the first snapshot when not given). `load_config`: with
    --config-dir, how a named config file becomes settings (the CLI's flag > env > file >
    default path). `on_registered`: called with (resource, socket) at every registration.
    `started`: set to the running parts once serving (tests, benchmarks). `plan`: how
    settings and an inventory become managers (tests give their own resources)."""
    # What the environment can refuse (the folder, the metrics port) is tried first,
    # so a bad one exits 2 before discovery, any server or any registration.
    if managers is not None:
        _check_names(config, managers)
    else:
        check_plugin_dir(config.device_plugin_dir, config.resource_name)
    if config.live is not None and load_config is None:
        raise ConfigError("config-dir", "needs the CLI's config loader")
    endpoint: MetricsEndpoint | None = None
    if config.metrics_address is not None:
        endpoint = MetricsEndpoint(metrics or Metrics(), config.metrics_address)
    inputs = _Inputs(managers, otlp_metrics, config_line, load_config, on_registered, started, plan)
    try:
        await _serve(config, inputs, tracing, stop, endpoint=endpoint)
    finally:
        if endpoint is not None:
            await endpoint.close()


@dataclass(frozen=True)
class _Inputs:
    """What serve() was given beside the config, carried as it is to where it is used."""

    managers: Sequence[ResourceManager] | None
    otlp_metrics: MetricsSink | None
    config_line: str | None
    load_config: Loader | None
    on_registered: OnRegistered | None
    started: asyncio.Future[Running] | None
    plan: Planner


class Running:
    """What a running `serve` is made of, for tests and benchmarks to observe."""

    def __init__(
        self,
        cell: SnapshotCell[Inventory],
        fleet: ResourceFleet,
        applied: SnapshotCell[ResourceSettings],
        reconciler: ConfigReconciler | None,
    ) -> None:
        self.cell = cell
        self.fleet = fleet
        self.applied = applied
        self.reconciler = reconciler


async def _serve(
    config: ServeConfig,
    inputs: _Inputs,
    tracing: Tracing,
    stop: asyncio.Event | None,
    *,
    endpoint: MetricsEndpoint | None,
) -> None:
    tasks: dict[str, Coroutine[Any, Any, None]] = {}
    try:
        await _build_and_run(config, inputs, tracing, stop, tasks, endpoint=endpoint)
    finally:
        # What was built but never run (a refusal at start): closed, so nothing is left pending.
        for coro in tasks.values():
            coro.close()


async def _build_and_run(
    config: ServeConfig,
    inputs: _Inputs,
    tracing: Tracing,
    stop: asyncio.Event | None,
    tasks: dict[str, Coroutine[Any, Any, None]],
    *,
    endpoint: MetricsEndpoint | None,
) -> None:
    # What the per-node config replaces at start; the rest is read from `inputs`.
    managers, config_line, plan = inputs.managers, inputs.config_line, inputs.plan
    live: _LiveStart | None = None
    if config.live is not None:
        load_config = inputs.load_config
        assert load_config is not None
        # The label decides the config, the config what is discovered and served: read first.
        session, labels, label = await _first_label(config, tasks)
        live = _LiveStart(session, labels, load_at_start(config.live, label, load_config), load_config)
        config = live.start.loaded.full
        config_line = live.start.loaded.line or config_line
    backend = make_backend(config.discovery)
    inventory = initial_inventory(
        backend, fail_on_init_error=config.discovery.fail_on_init_error, tracer=tracing.tracer
    )
    # The one snapshot cell: health publishes into it, every resource's server follows it.
    cell = SnapshotCell(inventory)
    pushed: list[MetricsSink] = [] if inputs.otlp_metrics is None else [inputs.otlp_metrics]
    sink = combined([endpoint.metrics, *pushed] if endpoint is not None else pushed)
    reconciler: ConfigReconciler | None = None
    if live is not None:
        reconciler = _reconciler(config, backend, cell, sink, live, tasks, _planner(config, plan))
        managers = reconciler.plan
    elif managers is None:
        # The start's own rules for the real planner (its warnings, --fail-on-init-error for
        # a MIG layout); a test's own planner as it is.
        managers = (
            plan_at_start(config.resources, inventory, fail_on_init_error=config.discovery.fail_on_init_error)
            if plan is plan_resources
            else plan(config.resources, inventory)
        )
    _check_names(config, managers)
    # An MPS resource's server follows its daemon's gate (the fleet makes one per MPS
    # resource, at start and when a config adds one). Its folder is made before the start-up
    # line: a root it cannot use is a refusal, and a refusal stays one line.
    make_mps_folders(managers, config.resources.mps_root)
    if config_line is not None:
        log.info("%s", config_line)
    # The settings being served: what follows the config (the node labels) reads this cell.
    applied = reconciler.applied if reconciler is not None else SnapshotCell(config.resources)
    status = HealthCheckStatus(metrics=sink, tracer=tracing.tracer)
    health = health_source(backend, cell, config.health, metrics=sink, tracer=tracing.tracer, status=status)
    if health is not None:
        status.register(*health.sources)
        # Supervised: a health loop that crashes is reported degraded and restarted,
        # and never takes the device-plugin server down with it.
        tasks["health"] = keep_running(health.sources[0], health.part, status)
    health_service = HealthService()
    if health is not None:
        tasks["health-status"] = health_service.follow(status)
    fleet = ResourceFleet(
        cell=cell,
        gate_for=partial(mps_gate, root=config.resources.mps_root),
        plugin_dir=config.device_plugin_dir,
        tracer=tracing.tracer,
        server_spans=tracing.server_spans,
        metrics=sink,
        # One gauge task per resource, the same for every one (and for those a config adds).
        record_devices=endpoint is not None or bool(pushed),
        health=health_service.servicer,
        on_registered=inputs.on_registered,
    )
    fleet.start(managers)
    tasks["plugin-servers"] = fleet.run()
    if reconciler is not None:
        reconciler.attach(fleet)
        tasks["live-config"] = reconciler.run()
    else:
        tasks["replan"] = replan_on_shape(cell, fleet, config.resources, _planner(config, plan))
    if config.rediscovery_interval_s > 0:
        tasks["rediscovery"] = rediscovery(backend, cell, config.rediscovery_interval_s)
    if config.cluster.enabled:
        # Imported only when on: a plain `serve` never loads the kubernetes client.
        from gpu_device_plugin.cluster.tasks import cluster_tasks

        # The cluster tasks wait for every resource's first registration.
        tasks.update(
            cluster_tasks(
                config.cluster,
                cell,
                # The settings being served: the labels follow a config applied live.
                settings=applied,
                not_before=fleet.registered,
                session=live.session if live is not None else None,
            )
        )
    if inputs.started is not None:
        inputs.started.set_result(Running(cell, fleet, applied, reconciler))
    await run_root_tasks(tasks, stop=stop)


async def _first_label(
    config: ServeConfig, tasks: dict[str, Coroutine[Any, Any, None]]
) -> tuple[ClusterSession, SnapshotCell[Labels | None], str | None]:
    """The session, the Node's label cell (followed from now on) and the label's value,
    read within FIRST_LABEL_WAIT_S (None after it: the fallback config until it is read)."""
    # Imported only with --config-dir: the node watch needs the kubernetes client.
    from gpu_device_plugin.cluster.node_watch import NodeLabelWatch
    from gpu_device_plugin.cluster.session import ClusterSession
    from gpu_device_plugin.cluster.tasks import connect, contained

    live = config.live
    node = config.cluster.node_name
    assert live is not None
    assert node is not None
    kubeconfig = config.cluster.kubeconfig
    # Not waiting for the registration, as the cluster tasks do: the label decides what registers.
    session = ClusterSession(lambda: connect(kubeconfig))
    watch = NodeLabelWatch(session=session, node_name=node)
    tasks["node-label-watch"] = contained("node label watch", watch.run)
    watching = asyncio.create_task(_first_read(watch), name="node-label-first-read")
    from gpu_device_plugin.cluster.nodeapi import ClusterApiError

    try:
        async with asyncio.timeout(FIRST_LABEL_WAIT_S):
            await watching
    except (TimeoutError, ClusterApiError) as err:
        watching.cancel()
        log.warning(
            "per-node config: node %s's labels could not be read (%s); serving the fallback "
            "config until they are",
            node,
            err or f"not within {FIRST_LABEL_WAIT_S:.0f} s",
        )
    labels = watch.labels.value
    return session, watch.labels, None if labels is None else labels.get(live.node_label)


@dataclass(frozen=True)
class _LiveStart:
    """--config-dir at start: the API session, the Node's label cell, the config chosen."""

    session: ClusterSession
    labels: SnapshotCell[Labels | None]
    start: Loaded
    load: Loader


def _reconciler(
    config: ServeConfig,
    backend: DiscoveryBackend,
    cell: SnapshotCell[Inventory],
    sink: MetricsSink,
    live: _LiveStart,
    tasks: dict[str, Coroutine[Any, Any, None]],
    plan: Planner,
) -> ConfigReconciler:
    from gpu_device_plugin.cluster.events import ConfigEventReporter, HealthEventRecorder
    from gpu_device_plugin.cluster.tasks import contained

    assert config.live is not None
    assert config.cluster.node_name is not None
    recorder = HealthEventRecorder(
        cell=cell, session=live.session, node_name=config.cluster.node_name, watch_health=False
    )
    tasks["config-events"] = contained("config events", recorder.run)
    return ConfigReconciler(
        live=config.live,
        load=live.load,
        plan=plan,
        cell=cell,
        labels=live.labels,
        reporter=ConfigEventReporter(recorder),
        metrics=sink,
        rediscover=(lambda: rediscover_once(backend, cell)) if config.rediscovery_interval_s > 0 else None,
        start=live.start,
    )


async def _first_read(watch: NodeLabelWatch) -> None:
    """One get of the Node (the watch itself starts with the root tasks, from the same cell)."""
    from gpu_device_plugin.cluster.offloop import off_loop

    api = await watch.session.api()
    node = await off_loop(lambda: api.get_node(watch.node_name), name="node-get")
    watch.labels.publish(dict(node.labels))


def _planner(config: ServeConfig, plan: Planner) -> Planner:
    """`plan`, refusing (as a bad config) a plan the device-plugin folder cannot serve. The
    real planner is the start's (resources/start.py) for every config, the first and each
    applied live: the same warnings, and the same --fail-on-init-error rule for a MIG
    layout the strategy cannot serve (a ConfigError: refused at start, rejected live)."""
    fail_on_init_error = config.discovery.fail_on_init_error

    def checked(settings: ResourceSettings, inventory: Inventory) -> tuple[ResourceManager, ...]:
        managers = (
            plan_at_start(settings, inventory, fail_on_init_error=fail_on_init_error)
            if plan is plan_resources
            else plan(settings, inventory)
        )
        _check_names(config, managers)
        # A config whose MPS folder cannot be made is refused like a bad key, before any change.
        make_mps_folders(managers, settings.mps_root)
        return managers

    return checked


def make_mps_folders(managers: Sequence[ResourceManager], root: MpsRoot) -> None:
    """Each MPS resource's folder under the MPS root, made now (ConfigError: exit 2 at start)."""
    for manager in managers:
        if mps_extension(manager) is None:
            continue
        ready = Path(root.ready_file(manager.resource_name))
        try:
            ready.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                "mps-root", f"cannot make {ready.parent}: {err.strerror or err} (is the MPS root mounted?)"
            ) from err


def mps_gate(manager: ResourceManager, cell: SnapshotCell[Inventory], *, root: MpsRoot) -> DaemonGate | None:
    """The gate an MPS resource's server follows: `cell`, its GPUs Unhealthy while its daemon is not ready."""
    if mps_extension(manager) is None or not isinstance(manager, ReplicatedManager):
        return None
    return DaemonGate(cell, Path(root.ready_file(manager.resource_name)), partial(daemon_plan, manager))


def _check_names(config: ServeConfig, managers: Sequence[ResourceManager]) -> None:
    names = [m.resource_name for m in managers]
    if not managers or len(set(names)) != len(names):
        raise ConfigError("resource-name", f"each resource needs one name of its own, got {names}")
    for name in names:
        check_plugin_dir(config.device_plugin_dir, name)


def health_source(
    backend: DiscoveryBackend,
    cell: SnapshotCell[Inventory],
    config: HealthConfig,
    *,
    metrics: MetricsSink = NULL_METRICS,
    tracer: trace.Tracer | None = None,
    status: HealthCheckStatus | None = None,
) -> HealthSource | None:
    """The backend's health loop, or None when checks are off or it has nothing to watch."""
    if not config.enabled:
        log.info("health checks are off (--health-checks %s): devices stay as discovered", config.checks)
        return None
    wiring = HealthWiring(
        cell=cell,
        ignored_xids=config.ignored_xids,
        recovery=config.recovery,
        probe_interval_s=config.probe_interval_s,
        status=status,
        metrics=metrics,
        tracer=tracer,
    )
    return backend.health_source(wiring)
