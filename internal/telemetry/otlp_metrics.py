"""The plugin's metrics pushed over OTLP, for backends that take OTLP and do not scrape.

Off unless OTEL_METRICS_EXPORTER names `otlp` (or `console`): the Prometheus
endpoint (--metrics-address) is the first way to read these metrics, and a
node whose OTLP endpoint is set for traces must not start pushing metrics
to a collector that was never told to expect them. Everything else comes from
the standard variables, read by the SDK itself: the endpoint, headers and
protocol (OTEL_EXPORTER_OTLP_[METRICS_]*), the push interval
(OTEL_METRIC_EXPORT_INTERVAL, 60 s by default) and the resource.

The instruments carry the names, help and label keys of the Prometheus
metrics (metrics.MetricSpec), so a collector that turns them back into
Prometheus gives the same series (counters gain `_total` there, as they do
in prometheus_client). The SDK and its exporter are imported only when on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from gpu_device_plugin import __version__
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Health, Inventory
from gpu_device_plugin.telemetry import metrics as spec
from gpu_device_plugin.telemetry.metrics import RPC_BUCKETS

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter

EXPORTER_VAR = "OTEL_METRICS_EXPORTER"
EXPORTERS = ("otlp", "console", "none")
METER_NAME = "gpu_device_plugin"


def metrics_exporter_name(env: Mapping[str, str]) -> str | None:
    """The exporter OTEL_METRICS_EXPORTER asks for, None when metrics over OTLP are off."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get(EXPORTER_VAR, "none").split(",") if n.strip()]
    for name in names:
        if name not in EXPORTERS:
            raise ConfigError(EXPORTER_VAR, f"{name!r} is not one of {', '.join(EXPORTERS)}")
    chosen = [n for n in names if n != "none"]
    if len(chosen) > 1:
        raise ConfigError(EXPORTER_VAR, f"one exporter at a time, not {', '.join(chosen)}")
    return chosen[0] if chosen else None


def _exporter(name: str, env: Mapping[str, str]) -> MetricExporter:
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

        return Http()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

    return Grpc()


class OtlpMetrics:
    """A MetricsSink recording into OpenTelemetry instruments, pushed on the SDK's schedule."""

    def __init__(self, provider: MeterProvider) -> None:
        self.provider = provider
        meter = provider.get_meter(METER_NAME, __version__)
        self._devices = meter.create_gauge(spec.DEVICES.name, "{device}", spec.DEVICES.help)
        self._allocations = meter.create_counter(spec.ALLOCATIONS.name, "{call}", spec.ALLOCATIONS.help)
        self._preferred = meter.create_counter(
            spec.PREFERRED_ALLOCATIONS.name, "{call}", spec.PREFERRED_ALLOCATIONS.help
        )
        self._latency = meter.create_histogram(
            spec.RPC_DURATION.name,
            "s",
            spec.RPC_DURATION.help,
            explicit_bucket_boundaries_advisory=RPC_BUCKETS,
        )
        self._registrations = meter.create_counter(
            spec.REGISTRATIONS.name, "{attempt}", spec.REGISTRATIONS.help
        )
        self._restarts = meter.create_counter(
            spec.KUBELET_RESTARTS.name, "{restart}", spec.KUBELET_RESTARTS.help
        )
        self._transitions = meter.create_counter(
            spec.HEALTH_TRANSITIONS.name, "{transition}", spec.HEALTH_TRANSITIONS.help
        )
        self._degraded = meter.create_gauge(
            spec.HEALTH_CHECKS_DEGRADED.name, "1", spec.HEALTH_CHECKS_DEGRADED.help
        )
        self._config_changes = meter.create_counter(
            spec.CONFIG_CHANGES.name, "{change}", spec.CONFIG_CHANGES.help
        )
        # Prometheus' Info is a gauge of 1 whose labels are the facts: the same here.
        meter.create_observable_gauge(spec.BUILD.name + "_info", [self._build], description=spec.BUILD.help)

    @staticmethod
    def _build(options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(1, spec.build_labels())]

    def rpc_latency(self, method: str, seconds: float) -> None:
        self._latency.record(seconds, {"method": method})

    def allocation(self, result: str) -> None:
        self._allocations.add(1, {"result": result})

    def preferred_allocation(self, result: str) -> None:
        self._preferred.add(1, {"result": result})

    def registration(self, result: str) -> None:
        self._registrations.add(1, {"result": result})

    def kubelet_restart(self) -> None:
        self._restarts.add(1)

    def health_transition(self, to: str, reason_class: str) -> None:
        self._transitions.add(1, {"to": to, "reason": reason_class})

    def health_checks_degraded(self, source: str, degraded: bool) -> None:
        self._degraded.set(1 if degraded else 0, {"source": source})

    def inventory(self, resource_name: str, inventory: Inventory) -> None:
        healthy = inventory.healthy_count
        self._devices.set(healthy, {"resource": resource_name, "health": Health.HEALTHY.value})
        unhealthy = len(inventory.devices) - healthy
        self._devices.set(unhealthy, {"resource": resource_name, "health": Health.UNHEALTHY.value})

    def config_change(self, result: str) -> None:
        self._config_changes.add(1, {"result": result})

    def shutdown(self) -> None:
        """Push what was recorded since the last export, then stop (bounded by the exporter's timeout)."""
        self.provider.shutdown()


def configure_otlp_metrics(env: Mapping[str, str] | None = None) -> OtlpMetrics | None:
    """OtlpMetrics when OTEL_METRICS_EXPORTER asks for it, else None; ConfigError on a bad value."""
    env = os.environ if env is None else env
    name = metrics_exporter_name(env)
    if name is None:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from gpu_device_plugin.telemetry.resource import build_resource

    # The reader reads OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT itself.
    reader = PeriodicExportingMetricReader(_exporter(name, env))
    provider = MeterProvider(resource=build_resource(env), metric_readers=[reader], shutdown_on_exit=False)
    return OtlpMetrics(provider)
