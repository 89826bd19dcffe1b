"""OpenTelemetry tracing: the SDK as it ships, configured by the standard OTEL_* variables.

Nothing configured means the API's no-op tracer and no gRPC interceptor at all,
so tracing costs nothing when it is off. Tracing is on when an OTLP endpoint is
set (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER
names an exporter; OTEL_SDK_DISABLED=true turns it off regardless.

On, it is the SDK's TracerProvider with one BatchSpanProcessor and the OTLP
exporter (gRPC, or HTTP/protobuf when OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL says
http/...) in this process; OTEL_TRACES_EXPORTER=console writes spans to stdout
instead. The SDK and the exporters read the rest themselves: the sampler
(OTEL_TRACES_SAMPLER), span limits (OTEL_SPAN_*), batching (OTEL_BSP_*), and
the endpoint, headers, TLS and timeout (OTEL_EXPORTER_OTLP_*). The provider is
handed to whoever makes spans; it is never installed as the global one.

Shutdown flushes what is queued: the batch processor's last exports, each
bounded by the exporter's timeout (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT, 10 s by
default) for up to 512 spans, and all of them by the processor's 30 s wait for
its thread; with a collector that answers it takes milliseconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace

from gpu_device_plugin import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

TRACER_NAME = "gpu_device_plugin"
#: Read by earlier versions (export in a child process or inline); now only warned about.
REMOVED_SPAN_EXPORT_VAR = "GPU_DP_SPAN_EXPORT"
# The SDK and exporters are imported only when tracing is on: they cost start-up
# time and several MiB of memory that a daemon with tracing off should not pay.


@dataclass
class Tracing:
    provider: trace.TracerProvider
    # The tracer of the SERVER span around every device-plugin RPC; None when tracing
    # is off, and then no interceptor is installed at all.
    server_spans: trace.Tracer | None

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
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return otlp_exporter(env)


def otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    """The OTLP exporter the protocol variables ask for; it reads its endpoint, headers,
    timeout and TLS settings from the process environment itself."""
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

    return Grpc()


def noop_tracing() -> Tracing:
    return Tracing(trace.NoOpTracerProvider(), None)


def _warn_removed(env: Mapping[str, str]) -> None:
    # Ignored rather than refused: every value it took asked for spans to be exported,
    # which they still are, and a DaemonSet that sets it must not crash-loop on upgrade.
    if REMOVED_SPAN_EXPORT_VAR in env:
        log.warning(
            "%s is no longer read (spans are exported in this process by the OpenTelemetry SDK); "
            "remove it from the environment",
            REMOVED_SPAN_EXPORT_VAR,
        )


def configure_tracing(env: Mapping[str, str] | None = None) -> Tracing:
    env = os.environ if env is None else env
    _warn_removed(env)
    if not tracing_enabled(env):
        return noop_tracing()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from gpu_device_plugin.telemetry.resource import build_resource

    # The CLI shuts it down itself, after the server has stopped (main.py).
    provider = TracerProvider(resource=build_resource(env), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    return sdk_tracing(provider)


def sdk_tracing(provider: trace.TracerProvider) -> Tracing:
    """Tracing through `provider`, with a server span for every device-plugin RPC."""
    return Tracing(provider, provider.get_tracer(TRACER_NAME, __version__))
