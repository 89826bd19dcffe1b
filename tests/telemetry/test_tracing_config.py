"""Tracing configured by the standard OTEL_* variables: OTLP over HTTP, the sampler, and the
removed GPU_DP_SPAN_EXPORT.

(OTLP over gRPC to a real receiver: test_otlp_export.py.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from opentelemetry.sdk.trace import TracerProvider

from gpu_device_plugin.telemetry.tracing import configure_tracing


class OtlpHttpReceiver(ThreadingHTTPServer):
    """Takes OTLP/HTTP protobuf exports on /v1/traces and keeps the span names."""

    def __init__(self) -> None:
        self.span_names: list[str] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: OtlpHttpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = trace_service.ExportTraceServiceRequest.FromString(body)
        self.server.paths.append(self.path)
        self.server.span_names += [
            span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
        ]
        answer = trace_service.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.shutdown()
    receiver.server_close()
    thread.join(timeout=5)


def test_otlp_over_http_when_the_protocol_says_so(
    monkeypatch: pytest.MonkeyPatch, http_receiver: OtlpHttpReceiver
) -> None:
    endpoint = f"http://127.0.0.1:{http_receiver.server_address[1]}"
    # The exporters read these from the process environment, as every OTel SDK does.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tracing = configure_tracing(env)
    with tracing.tracer.start_as_current_span("Register"):
        pass
    tracing.shutdown()  # flushes the batch

    assert http_receiver.paths == ["/v1/traces"]
    assert http_receiver.span_names == ["Register"]


@pytest.mark.parametrize(
    "env",
    [{"OTEL_TRACES_EXPORTER": "console"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}],
    ids=["console", "otlp"],
)
def test_sampler_comes_from_otel_traces_sampler(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    tracing = configure_tracing(env)
    try:
        # The SDK's own provider, never the global one.
        assert type(tracing.provider) is TracerProvider
        assert tracing.provider is not trace.get_tracer_provider()
        sampler = tracing.provider.sampler  # type: ignore[attr-defined]
        assert sampler.get_description() == "TraceIdRatioBased{0.25}"
    finally:
        tracing.shutdown()


@pytest.mark.parametrize("setting", ["process", "inline", "thread"])
def test_the_removed_span_export_variable_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture, http_receiver: OtlpHttpReceiver, setting: str
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_receiver.server_address[1]}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "GPU_DP_SPAN_EXPORT": setting,
    }
    with caplog.at_level(logging.WARNING, logger="gpu_device_plugin.telemetry.tracing"):
        tracing = configure_tracing(env)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "GPU_DP_SPAN_EXPORT is no longer read (spans are exported in this process by the "
        "OpenTelemetry SDK); remove it from the environment"
    ]
    assert type(tracing.provider) is TracerProvider
    tracing.shutdown()
