"""Wiring for `serve`: each layer built from the config, one plugin server per resource, run together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

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
from gpu_device_plugin.mps.readiness import DaemonGate
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.mps import daemon_plan, mps_extension
from gpu_device_plugin.resources.replicated import ReplicatedManager
from gpu_device_plugin.resources.start import plan_at_start
from gpu_device_plugin.root_tasks import run_root_tasks
from gpu_device_plugin.server.health_service import HealthService
from gpu_device_plugin.server.service import DevicePluginService
from gpu_device_plugin.server.sockets import check_plugin_dir
from gpu_device_plugin.server.supervisor import PluginSupervisor
from gpu_device_plugin.telemetry.metrics import (
    NULL_METRICS,
    Metrics,
    MetricsEndpoint,
    MetricsSink,
    combined,
    follow_inventory,
    serve_metrics,
)
from gpu_device_plugin.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


async def serve(
    config: ServeConfig,
    tracing: Tracing,
    stop: asyncio.Event | None = None,
    *,
    metrics: Metrics | None = None,
    otlp_metrics: MetricsSink | None = None,
    config_line: str | None = None,
    managers: Sequence[ResourceManager] | None = None,
) -> None:
    """Run until stopped. `metrics`: the object to record into when --metrics-address is set
    (tests pass their own to read its URL); made here when not given. `otlp_metrics`: the
    OTLP sink when OTEL_METRICS_EXPORTER asks for one; everything is recorded into both.
    `config_line`: the effective configuration, logged once discovery has started (so that
    every refusal at start stays one line). `managers`: the resources to serve
    (plan_resources on the first snapshot when not given: resources/start.py)."""
    # What the environment can refuse (the folder, the metrics port) is tried first,
    # so a bad one exits 2 before discovery, any server or any registration.
    if managers is not None:
        _check_names(config, managers)
    else:
        check_plugin_dir(config.device_plugin_dir, config.resource_name)
    endpoint: MetricsEndpoint | None = None
    if config.metrics_address is not None:
        endpoint = MetricsEndpoint(metrics or Metrics(), config.metrics_address)
    try:
        await _serve(
            config,
            managers,
            tracing,
            stop,
            endpoint=endpoint,
            otlp_metrics=otlp_metrics,
            config_line=config_line,
        )
    finally:
        if endpoint is not None:
            await endpoint.close()


async def _serve(
    config: ServeConfig,
    managers: Sequence[ResourceManager] | None,
    tracing: Tracing,
    stop: asyncio.Event | None,
    *,
    endpoint: MetricsEndpoint | None,
    otlp_metrics: MetricsSink | None,
    config_line: str | None = None,
) -> None:
    backend = make_backend(config.discovery)
    inventory = initial_inventory(
        backend, fail_on_init_error=config.discovery.fail_on_init_error, tracer=tracing.tracer
    )
    if managers is None:
        managers = plan_at_start(
            config.resources, inventory, fail_on_init_error=config.discovery.fail_on_init_error
        )
        _check_names(config, managers)
    # The one snapshot cell: health publishes into it, every resource's server follows it.
    cell = SnapshotCell(inventory)
    # An MPS resource's server follows its daemon's gate: the same snapshots, its GPUs
    # Unhealthy while the control daemon is not ready. Made before the start-up line: a
    # root it cannot use is a refusal, and a refusal stays one line.
    gates = mps_gates(managers, cell, config.resources.mps_root)
    if config_line is not None:
        log.info("%s", config_line)
    tasks: dict[str, Coroutine[Any, Any, None]] = {}
    pushed: list[MetricsSink] = [] if otlp_metrics is None else [otlp_metrics]
    sink = combined([endpoint.metrics, *pushed] if endpoint is not None else pushed)
    services = [
        DevicePluginService(
            manager=m, cell=gates[m.resource_name].cell if m.resource_name in gates else cell, metrics=sink
        )
        for m in managers
    ]
    for name, gate in gates.items():
        tasks[f"mps-ready {name}"] = gate.follow()
    one = len(services) == 1
    for index, service in enumerate(services):
        suffix = "" if one else f" {service.resource_name}"
        if endpoint is not None and index == 0:
            tasks["metrics"] = serve_metrics(
                endpoint, service.devices, resource_name=service.resource_name, sink=sink
            )
        elif endpoint is not None or pushed:
            tasks[f"metrics{suffix}"] = follow_inventory(
                sink, service.devices, resource_name=service.resource_name
            )
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
    # The cluster tasks wait for every resource's first registration.
    registered = asyncio.Event()
    waiting = {s.resource_name for s in services}

    def on_registered(name: str) -> Callable[[Path], None]:
        def done(_socket: Path) -> None:
            waiting.discard(name)
            if not waiting:
                registered.set()

        return done

    for service in services:
        supervisor = PluginSupervisor(
            service=service,
            plugin_dir=config.device_plugin_dir,
            tracer=tracing.tracer,
            server_spans=tracing.server_spans,
            metrics=sink,
            on_registered=on_registered(service.resource_name),
            health=health_service.servicer,
        )
        tasks["plugin-server" if one else f"plugin-server {service.resource_name}"] = supervisor.run()
    if config.cluster.enabled:
        # Imported only when on: a plain `serve` never loads the kubernetes client.
        from gpu_device_plugin.cluster.tasks import cluster_tasks

        tasks.update(cluster_tasks(config.cluster, cell, settings=config.resources, not_before=registered))
    await run_root_tasks(tasks, stop=stop)


def mps_gates(
    managers: Sequence[ResourceManager], cell: SnapshotCell[Inventory], root: MpsRoot
) -> dict[str, DaemonGate]:
    """One gate per MPS resource, by name; its folder under the MPS root made now (exit 2 if it cannot be)."""
    gates: dict[str, DaemonGate] = {}
    for manager in managers:
        if mps_extension(manager) is None or not isinstance(manager, ReplicatedManager):
            continue
        ready = Path(root.ready_file(manager.resource_name))
        try:
            ready.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                "mps-root", f"cannot make {ready.parent}: {err.strerror or err} (is the MPS root mounted?)"
            ) from err
        gates[manager.resource_name] = DaemonGate(cell, ready, partial(daemon_plan, manager))
    return gates


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
