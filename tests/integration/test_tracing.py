"""Spans for registration and every RPC, through the real gRPC server and its traced servicer."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry.trace import StatusCode

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.tracing import configure_tracing, sdk_tracing, tracing_enabled
from testsupport.spans import SpanRecorder


async def test_registration_and_rpcs_are_spans(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
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
    assert allocates[1].attributes[attrs.ERROR_CODE] == "INVALID_ARGUMENT"


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
    assert (tracing.server_spans is not None) is enabled
    tracing.shutdown()


async def test_allocate_and_preferred_spans_answer_the_sres_questions(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    stub = (await kubelet.wait_registered()).stub()
    available = [fake_uuid(i) for i in range(4)]
    preferred = await stub.GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available, must_include_deviceIDs=[fake_uuid(2)], allocation_size=2
                )
            ]
        )
    )
    chosen = list(preferred.container_responses[0].deviceIDs)
    await stub.Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=chosen)])
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Allocate(pb.AllocateRequest())

    allocate = "/v1beta1.DevicePlugin/Allocate"
    spans = await recorder.wait_for(lambda spans: sum(s.name == allocate for s in spans) == 2)
    pref = next(s for s in spans if s.name == "/v1beta1.DevicePlugin/GetPreferredAllocation").attributes
    assert pref[attrs.RESOURCE_NAME] == "example.com/gpu"
    assert list(pref[attrs.AVAILABLE_IDS]) == available
    assert list(pref[attrs.MUST_INCLUDE_IDS]) == [fake_uuid(2)]
    assert pref[attrs.ALLOCATION_SIZE] == 2
    assert list(pref[attrs.CHOSEN_IDS]) == chosen
    assert isinstance(pref[attrs.SCORE], int)
    ok, refused = (s for s in spans if s.name == allocate)
    assert list(ok.attributes[attrs.REQUESTED_IDS]) == chosen
    assert ok.attributes[attrs.ALLOCATION_SIZE] == 2
    assert ok.attributes[attrs.DEVICE_LIST_STRATEGY] == "envvar"
    assert ok.attributes[attrs.DEVICE_ID_STRATEGY] == "uuid"
    assert ok.status.status_code is not StatusCode.ERROR
    assert refused.attributes[attrs.CONTAINERS] == 0
    assert refused.attributes[attrs.ERROR_CODE] == "INVALID_ARGUMENT"
    assert refused.status.status_code is StatusCode.ERROR


async def test_health_change_is_a_span_event_with_device_health_reason_and_xid(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    await kubelet.wait_registered()
    devices: list[dict[str, object]] = [{"uuid": fake_uuid(i)} for i in range(8)]
    devices[5]["xid"] = 79
    fake_config.write_text(yaml.safe_dump({"devices": devices}))

    spans = await recorder.wait_for(lambda spans: any(s.name == "HealthUpdate" for s in spans))
    update = next(s for s in spans if s.name == "HealthUpdate")
    assert str(update.attributes[attrs.HEALTH_SOURCE]).startswith("fake config ")
    [event] = update.events
    assert event.name == attrs.HEALTH_CHANGED_EVENT
    assert event.attributes == {
        attrs.DEVICE_ID: fake_uuid(5),
        attrs.HEALTH: "Unhealthy",
        attrs.HEALTH_BEFORE: "Healthy",
        attrs.REASON: "XID 79 (GPU has fallen off the bus)",
        attrs.REASON_CLASS: "xid",
        attrs.XID: 79,
    }


async def test_kubelet_restart_is_a_span(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    await kubelet.wait_registered()
    await kubelet.restart()
    spans = await recorder.wait_for(lambda spans: any(s.name == "KubeletRestart" for s in spans))
    restart = next(s for s in spans if s.name == "KubeletRestart")
    assert restart.attributes[attrs.RESOURCE_NAME] == "example.com/gpu"
    assert restart.attributes[attrs.RESTART_REASON]
