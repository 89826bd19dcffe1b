"""Tracing configured by the standard OTEL_* variables: OTLP over HTTP, and the sampler.

(OTLP over gRPC to a real receiver: test_otlp_export.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from opentelemetry.sdk.trace import TracerProvider

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.telemetry.pipe_tracer import PipeTracerProvider
from gpu_device_plugin.telemetry.tracing import SPAN_EXPORT_VAR, configure_tracing


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


@pytest.mark.parametrize("span_export", ["process", "inline"])
def test_otlp_over_http_when_the_protocol_says_so(
    monkeypatch: pytest.MonkeyPatch, http_receiver: OtlpHttpReceiver, span_export: str
) -> None:
    endpoint = f"http://127.0.0.1:{http_receiver.server_address[1]}"
    # The exporters read these from the process environment, as every OTel SDK does.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        SPAN_EXPORT_VAR: span_export,
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
    ("env", "provider"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, TracerProvider),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", SPAN_EXPORT_VAR: "inline"}, TracerProvider),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, PipeTracerProvider),
    ],
    ids=["console", "inline", "process"],
)
def test_sampler_comes_from_otel_traces_sampler(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], provider: type
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    tracing = configure_tracing(env)
    try:
        # Export in the child process: the cheaper pipe_tracer spans; in this process: the SDK's.
        assert type(tracing.provider) is provider
        sampler = tracing.provider.sampler  # type: ignore[attr-defined]
        assert sampler.get_description() == "TraceIdRatioBased{0.25}"
    finally:
        tracing.shutdown()


def test_an_unknown_span_export_mode_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", SPAN_EXPORT_VAR: "thread"})
    assert raised.value.field == "GPU_DP_SPAN_EXPORT"
    assert "'thread' is not one of process, inline" in str(raised.value)
