"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Nothing configured means the API's no-op tracer and no gRPC interceptor at all,
so tracing costs nothing when it is off. Tracing is on when an OTLP endpoint is
set (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER
names an exporter; OTEL_SDK_DISABLED=true turns it off regardless.

Where the OTLP export runs: by default in a separate process (span_pipe), so
that the exporter's protobuf encoding never holds this process's GIL while the
kubelet waits on an RPC, and spans are pipe_tracer's, which cost a fraction of
the SDK's own to make. GPU_DP_SPAN_EXPORT=inline keeps the SDK's
BatchSpanProcessor and exporter in this process instead (one process fewer,
at the price of the latency spikes bench/tracing.py measures). The console
exporter (OTEL_TRACES_EXPORTER=console) always runs inline: it writes to our
stdout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace

from gpu_device_plugin import __version__
from gpu_device_plugin.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from gpu_device_plugin.telemetry.server_spans import ServerSpans

TRACER_NAME = "gpu_device_plugin"
#: Where the OTLP exporter runs: "process" (the default) or "inline".
SPAN_EXPORT_VAR = "GPU_DP_SPAN_EXPORT"
SPAN_EXPORT_MODES = ("process", "inline")
# The SDK and exporters are imported only when tracing is on: they cost start-up
# time and several MiB of memory that a daemon with tracing off should not pay.


@dataclass
class Tracing:
    provider: trace.TracerProvider
    # A SERVER span per RPC; None when tracing is off (the servicer is then registered as is).
    server_spans: ServerSpans | None

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


def _console(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "console"


def span_export_mode(env: Mapping[str, str]) -> str:
    mode = env.get(SPAN_EXPORT_VAR, SPAN_EXPORT_MODES[0]).lower()
    if mode not in SPAN_EXPORT_MODES:
        raise ConfigError(SPAN_EXPORT_VAR, f"{mode!r} is not one of {', '.join(SPAN_EXPORT_MODES)}")
    return mode


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if _console(env):
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


def configure_tracing(env: Mapping[str, str] | None = None) -> Tracing:
    env = os.environ if env is None else env
    if not tracing_enabled(env):
        return noop_tracing()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from gpu_device_plugin.telemetry.resource import build_resource

    mode = span_export_mode(env)
    resource = build_resource(env)
    # The SDK builds the sampler (OTEL_TRACES_SAMPLER / _ARG) from the environment;
    # both modes use it (and both read the OTEL_SPAN_*_LIMIT variables).
    sdk = TracerProvider(resource=resource, shutdown_on_exit=False)
    if mode == "inline" or _console(env):
        sdk.add_span_processor(BatchSpanProcessor(_exporter(env)))
        return sdk_tracing(sdk)
    from gpu_device_plugin.telemetry.pipe_tracer import PipeTracerProvider
    from gpu_device_plugin.telemetry.span_pipe import SpanPipe

    # The child reads the OTEL_* variables as the inline exporter would: ours, with
    # what `env` says over them when it is not the process environment.
    child_env = None if env is os.environ else {**os.environ, **env}
    pipe = SpanPipe(resource, child_env)
    return sdk_tracing(PipeTracerProvider(pipe, sampler=sdk.sampler, id_generator=sdk.id_generator))


def sdk_tracing(provider: trace.TracerProvider) -> Tracing:
    """Tracing through `provider`, with a server span for every device-plugin RPC."""
    from gpu_device_plugin.telemetry.server_spans import ServerSpans

    return Tracing(provider, ServerSpans(provider.get_tracer(TRACER_NAME, __version__)))
