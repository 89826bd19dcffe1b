"""Prometheus metrics, and the HTTP endpoint that serves them; what every metrics sink records.

`Metrics` owns its own CollectorRegistry (never the process-global one), so two
plugins in one process (tests, benchmarks) never share a counter. When
`--metrics-address` is not given, every layer gets `NULL_METRICS` instead: the
same methods doing nothing, so the RPC path pays one no-op call and no branch.

Layers call the recording methods with plain strings; the label values they
pass are bounded sets (gRPC status names, health states, reason classes),
never device ids or free text.

The endpoint is prometheus_client's own threaded WSGI server: it speaks HTTP
properly (HEAD, gzip, OpenMetrics negotiation) and a scrape renders in its
thread, not on the event loop that answers the kubelet. Nothing here may block
the event loop or raise into the RPC path.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from gpu_device_plugin import __version__
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Health, Inventory
from gpu_device_plugin.inventory.cell import Watchable

log = logging.getLogger(__name__)

PREFIX = "gpu_device_plugin_"
# Unary device-plugin RPCs answer in well under a millisecond on a quiet node;
# the top buckets catch a starved event loop.
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class MetricsSink(Protocol):
    """What the layers record; `Metrics` and `NullMetrics` both implement it."""

    def rpc_latency(self, method: str, seconds: float) -> None: ...
    def allocation(self, result: str) -> None: ...
    def preferred_allocation(self, result: str) -> None: ...
    def registration(self, result: str) -> None: ...
    def kubelet_restart(self) -> None: ...
    def health_transition(self, to: str, reason_class: str) -> None: ...
    def health_checks_degraded(self, source: str, degraded: bool) -> None: ...
    def inventory(self, resource_name: str, inventory: Inventory) -> None: ...
    def config_change(self, result: str) -> None: ...


class NullMetrics:
    """Metrics switched off: every method does nothing."""

    def rpc_latency(self, method: str, seconds: float) -> None:
        pass

    def allocation(self, result: str) -> None:
        pass

    def preferred_allocation(self, result: str) -> None:
        pass

    def registration(self, result: str) -> None:
        pass

    def kubelet_restart(self) -> None:
        pass

    def health_transition(self, to: str, reason_class: str) -> None:
        pass

    def health_checks_degraded(self, source: str, degraded: bool) -> None:
        pass

    def inventory(self, resource_name: str, inventory: Inventory) -> None:
        pass

    def config_change(self, result: str) -> None:
        pass


NULL_METRICS: MetricsSink = NullMetrics()


def result_label(code: grpc.StatusCode | None) -> str:
    """`ok`, or the gRPC status name in lower case (invalid_argument, ...)."""
    return "ok" if code is None else str(code.name).lower()


@dataclass(frozen=True)
class MetricSpec:
    """One metric's name, help and label names: the same in Prometheus and in OTLP."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


DEVICES = MetricSpec(
    PREFIX + "devices", "Devices advertised to the kubelet, by resource and health.", ("resource", "health")
)
ALLOCATIONS = MetricSpec(
    PREFIX + "allocations", "Allocate calls, by result (ok or the gRPC status name).", ("result",)
)
PREFERRED_ALLOCATIONS = MetricSpec(
    PREFIX + "preferred_allocations",
    "GetPreferredAllocation calls, by result (ok or the gRPC status name).",
    ("result",),
)
RPC_DURATION = MetricSpec(
    PREFIX + "rpc_duration_seconds",
    "Time to answer a unary device-plugin RPC, in the servicer, by method.",
    ("method",),
)
REGISTRATIONS = MetricSpec(
    PREFIX + "registrations",
    "Registration attempts with the kubelet, by result (ok or the gRPC status name).",
    ("result",),
)
KUBELET_RESTARTS = MetricSpec(
    PREFIX + "kubelet_restarts", "Kubelet restarts seen (kubelet.sock recreated or our socket removed)."
)
HEALTH_TRANSITIONS = MetricSpec(
    PREFIX + "health_transitions",
    "Device health changes, by the health reached and the class of reason.",
    ("to", "reason"),
)
HEALTH_CHECKS_DEGRADED = MetricSpec(
    PREFIX + "health_checks_degraded",
    "1 while a part of health checking is down (devices keep their last known health), else 0.",
    ("source",),
)
CONFIG_CHANGES = MetricSpec(
    PREFIX + "config_changes",
    "Per-node config changes seen (label, file or folder), by result: applied, unchanged or rejected.",
    ("result",),
)
BUILD = MetricSpec(PREFIX + "build", "Version of the plugin and its runtime.")


def build_labels() -> dict[str, str]:
    return {"version": __version__, "python": platform.python_version(), "grpcio": grpc.__version__}


class Metrics:
    """The plugin's metrics in a registry of their own, named `gpu_device_plugin_*`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # Where the endpoint listens (with the real port when asked for :0), once it does.
        self.url: str | None = None
        self.listening = asyncio.Event()
        registry = self.registry
        self._devices = Gauge(DEVICES.name, DEVICES.help, DEVICES.labels, registry=registry)
        self._allocations = Counter(ALLOCATIONS.name, ALLOCATIONS.help, ALLOCATIONS.labels, registry=registry)
        self._preferred = Counter(
            PREFERRED_ALLOCATIONS.name,
            PREFERRED_ALLOCATIONS.help,
            PREFERRED_ALLOCATIONS.labels,
            registry=registry,
        )
        self._latency = Histogram(
            RPC_DURATION.name, RPC_DURATION.help, RPC_DURATION.labels, buckets=RPC_BUCKETS, registry=registry
        )
        self._registrations = Counter(
            REGISTRATIONS.name, REGISTRATIONS.help, REGISTRATIONS.labels, registry=registry
        )
        self._restarts = Counter(KUBELET_RESTARTS.name, KUBELET_RESTARTS.help, registry=registry)
        self._transitions = Counter(
            HEALTH_TRANSITIONS.name, HEALTH_TRANSITIONS.help, HEALTH_TRANSITIONS.labels, registry=registry
        )
        self._degraded = Gauge(
            HEALTH_CHECKS_DEGRADED.name,
            HEALTH_CHECKS_DEGRADED.help,
            HEALTH_CHECKS_DEGRADED.labels,
            registry=registry,
        )
        self._config_changes = Counter(
            CONFIG_CHANGES.name, CONFIG_CHANGES.help, CONFIG_CHANGES.labels, registry=registry
        )
        Info(BUILD.name, BUILD.help, registry=registry).info(build_labels())

    def rpc_latency(self, method: str, seconds: float) -> None:
        self._latency.labels(method).observe(seconds)

    def allocation(self, result: str) -> None:
        self._allocations.labels(result).inc()

    def preferred_allocation(self, result: str) -> None:
        self._preferred.labels(result).inc()

    def registration(self, result: str) -> None:
        self._registrations.labels(result).inc()

    def kubelet_restart(self) -> None:
        self._restarts.inc()

    def health_transition(self, to: str, reason_class: str) -> None:
        self._transitions.labels(to, reason_class).inc()

    def health_checks_degraded(self, source: str, degraded: bool) -> None:
        self._degraded.labels(source).set(1 if degraded else 0)

    def inventory(self, resource_name: str, inventory: Inventory) -> None:
        healthy = inventory.healthy_count
        self._devices.labels(resource_name, Health.HEALTHY.value).set(healthy)
        self._devices.labels(resource_name, Health.UNHEALTHY.value).set(len(inventory.devices) - healthy)

    def config_change(self, result: str) -> None:
        self._config_changes.labels(result).inc()


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) into its parts; ValueError when it is not one."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} must be HOST:PORT, e.g. 127.0.0.1:9400")
    return host.removeprefix("[").removesuffix("]"), int(port)


class MetricsEndpoint:
    """The HTTP server for `metrics`, listening from construction until `close()`.

    Bound synchronously at start, before any server or registration: a taken port
    or an unknown host is a ConfigError naming --metrics-address, and nothing else
    has started yet.
    """

    def __init__(self, metrics: Metrics, address: str) -> None:
        host, port = parse_address(address)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as err:  # EADDRINUSE, EACCES (a port below 1024), an unknown host (gaierror)
            reason = err.strerror or str(err)
            raise ConfigError("metrics-address", f"cannot listen on {address}: {reason}") from err
        self.metrics = metrics
        bound_host, bound_port = str(self._server.server_address[0]), int(self._server.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/metrics"
        self._closed = False
        metrics.url = self.url
        metrics.listening.set()
        log.info("serving metrics at %s", self.url)

    async def close(self) -> None:
        """Stop listening; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.metrics.listening.clear()
        self.metrics.url = None
        # shutdown() waits for serve_forever's next poll (up to 0.5 s): off the loop.
        await asyncio.shield(asyncio.to_thread(self._server.shutdown))
        self._server.server_close()
        self._thread.join(timeout=1.0)


@asynccontextmanager
async def metrics_endpoint(metrics: Metrics, address: str) -> AsyncIterator[str]:
    """Serve `metrics` at http://address/metrics while inside; yields the URL (real port)."""
    endpoint = MetricsEndpoint(metrics, address)
    try:
        yield endpoint.url
    finally:
        await endpoint.close()


async def follow_inventory(sink: MetricsSink, cell: Watchable[Inventory], *, resource_name: str) -> None:
    """Root task: the device gauges kept equal to the cell (or a resource's view of it)."""
    async for inventory in cell.watch():
        sink.inventory(resource_name, inventory)


class TeeMetrics:
    """Records into every sink given (Prometheus and OTLP both on)."""

    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks = sinks

    def rpc_latency(self, method: str, seconds: float) -> None:
        for sink in self.sinks:
            sink.rpc_latency(method, seconds)

    def allocation(self, result: str) -> None:
        for sink in self.sinks:
            sink.allocation(result)

    def preferred_allocation(self, result: str) -> None:
        for sink in self.sinks:
            sink.preferred_allocation(result)

    def registration(self, result: str) -> None:
        for sink in self.sinks:
            sink.registration(result)

    def kubelet_restart(self) -> None:
        for sink in self.sinks:
            sink.kubelet_restart()

    def health_transition(self, to: str, reason_class: str) -> None:
        for sink in self.sinks:
            sink.health_transition(to, reason_class)

    def health_checks_degraded(self, source: str, degraded: bool) -> None:
        for sink in self.sinks:
            sink.health_checks_degraded(source, degraded)

    def inventory(self, resource_name: str, inventory: Inventory) -> None:
        for sink in self.sinks:
            sink.inventory(resource_name, inventory)

    def config_change(self, result: str) -> None:
        for sink in self.sinks:
            sink.config_change(result)


def combined(sinks: list[MetricsSink]) -> MetricsSink:
    """NULL_METRICS for none, the sink itself for one, a TeeMetrics for more."""
    if not sinks:
        return NULL_METRICS
    return sinks[0] if len(sinks) == 1 else TeeMetrics(*sinks)
