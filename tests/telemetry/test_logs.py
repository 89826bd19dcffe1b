"""JSON log lines carry the trace and span ids of the span they were written in."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry.logs import JsonFormatter
from gpu_device_plugin.telemetry.tracing import sdk_tracing
from testsupport.spans import SpanRecorder


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything the plugin's loggers say, as JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gpu_device_plugin")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def entries(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_inside_a_span_names_it_and_one_outside_does_not(
    json_lines: io.StringIO, recorder: SpanRecorder
) -> None:
    tracer = recorder.provider.get_tracer("test")
    log = logging.getLogger("gpu_device_plugin.test")
    log.info("outside")
    with tracer.start_as_current_span("work") as span:
        log.info("inside", extra={"device": "GPU-1"})

    outside, inside = entries(json_lines)
    assert "trace_id" not in outside
    assert "span_id" not in outside
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["msg"] == "inside"
    assert inside["device"] == "GPU-1"


async def test_a_refused_allocate_logs_under_its_rpc_span(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, json_lines: io.StringIO, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    stub = (await kubelet.wait_registered()).stub()
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-nope"])])
        )

    name = "/v1beta1.DevicePlugin/Allocate"
    spans = await recorder.wait_for(lambda spans: any(s.name == name for s in spans))
    allocate = next(s for s in spans if s.name == name).context
    [refusal] = [e for e in entries(json_lines) if str(e["msg"]).startswith("Allocate refused")]
    # The SRE's way from the log line to the trace, and back.
    assert refusal["trace_id"] == format(allocate.trace_id, "032x")
    assert refusal["span_id"] == format(allocate.span_id, "016x")
