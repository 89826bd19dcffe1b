"""Spans for registration and every RPC, through the real gRPC interceptor."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from opentelemetry.trace import StatusCode

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.discovery.fake_config import fake_uuid
from gpu_device_plugin.telemetry.tracing import configure_tracing, sdk_tracing, tracing_enabled
from support.kubelet import KubeletSim
from support.spans import SpanRecorder


async def test_registration_and_rpcs_are_spans(kubelet: KubeletSim, fake_config: Path, start_plugin) -> None:
    recorder = SpanRecorder()
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    registration = await kubelet.wait_registered()
    stub = registration.stub()
    ids = [fake_uuid(0), fake_uuid(1)]
    await stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-x"])])
        )
    allocate = "/v1beta1.DevicePlugin/Allocate"
    spans = await recorder.wait_for(lambda spans: sum(s.name == allocate for s in spans) == 2)
    names = [s.name for s in spans]
    register = next(s for s in spans if s.name == "Register")
    assert register.attributes["gpu.resource_name"] == "example.com/gpu"
    assert register.attributes["gpu.endpoint"] == registration.request.endpoint
    assert "/v1beta1.DevicePlugin/GetDevicePluginOptions" in names
    allocates = [s for s in spans if s.name == allocate]
    assert len(allocates) == 2
    assert allocates[1].status.status_code is StatusCode.ERROR
    assert list(allocates[1].attributes["gpu.refused_ids"]) == ["GPU-x"]


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        pytest.param({}, False, id="nothing-set"),
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True, id="endpoint"),
        pytest.param({"OTEL_TRACES_EXPORTER": "console"}, True, id="console-exporter"),
        pytest.param({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, False, id="none"),
        pytest.param({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, False, id="disabled"),
    ],
)
def test_tracing_is_on_only_when_configured(env: dict[str, str], enabled: bool) -> None:
    assert tracing_enabled(env) is enabled
    tracing = configure_tracing(env)
    assert bool(tracing.interceptors) is enabled
    tracing.shutdown()
