"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Nothing configured means the API's no-op tracer and no gRPC interceptor at all,
so tracing costs nothing when it is off. Tracing is on when an OTLP endpoint is
set (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER
names an exporter; OTEL_SDK_DISABLED=true turns it off regardless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace

from gpu_device_plugin import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

TRACER_NAME = "gpu_device_plugin"
# The SDK and exporters are imported only when tracing is on: they cost start-up
# time and several MiB of memory that a daemon with tracing off should not pay.


@dataclass
class Tracing:
    provider: trace.TracerProvider
    interceptors: tuple[grpc.aio.ServerInterceptor, ...]

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(TRACER_NAME, __version__)

    def shutdown(self) -> None:
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def tracing_enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return bool(
        exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "console":
        return ConsoleSpanExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

    return Grpc()


def noop_tracing() -> Tracing:
    return Tracing(trace.NoOpTracerProvider(), ())


def configure_tracing(env: Mapping[str, str] | None = None) -> Tracing:
    env = os.environ if env is None else env
    if not tracing_enabled(env):
        return noop_tracing()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from gpu_device_plugin.telemetry.resource import build_resource

    # The sampler comes from OTEL_TRACES_SAMPLER / _ARG (the SDK reads them).
    provider = TracerProvider(resource=build_resource(env))
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    return sdk_tracing(provider)


def sdk_tracing(provider: trace.TracerProvider) -> Tracing:
    """Tracing through `provider`, with a server span for every device-plugin RPC."""
    from gpu_device_plugin.telemetry.server_spans import ServerSpans

    return Tracing(provider, (ServerSpans(provider.get_tracer(TRACER_NAME, __version__)),))
