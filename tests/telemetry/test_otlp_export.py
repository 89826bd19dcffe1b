"""Over the wire: the real `serve` process exports its spans to a real OTLP/gRPC receiver,
through its span-export process (telemetry/span_pipe.py), which may die without harm."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.discovery.fake_config import fake_uuid
from gpu_device_plugin.telemetry import attributes as attrs
from support.kubelet import KubeletSim
from support.otlp import OtlpReceiver, ReceivedSpan
from support.process import serve_argv

ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
SPAN_KIND_SERVER = 2
STATUS_ERROR = 2
# A caller's W3C trace context: the Allocate span must continue this trace, as its child.
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as started:
        yield started


async def start_exporting_plugin(plugin_dir: Path, config: Path, endpoint: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.node.name=node-a",
        }
    )
    return await asyncio.create_subprocess_exec(
        *serve_argv(config, plugin_dir), env=env, stderr=asyncio.subprocess.PIPE
    )


def allocates(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == ALLOCATE]


async def test_registration_and_allocate_spans_reach_an_otlp_receiver(
    kubelet: KubeletSim, fake_config: Path, receiver: OtlpReceiver
) -> None:
    process = await start_exporting_plugin(kubelet.folder, fake_config, receiver.endpoint)
    try:
        registration = await kubelet.wait_registered(timeout=15)
        stub = registration.stub()
        ids = [fake_uuid(0), fake_uuid(1)]
        await stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]),
            metadata=(("traceparent", TRACEPARENT),),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Allocate(
                pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-x"])])
            )
        spans = await receiver.wait_for(
            lambda spans: len(allocates(spans)) == 2 and any(s.name == "Register" for s in spans)
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()

    register = next(s for s in spans if s.name == "Register")
    assert register.attributes[attrs.RESOURCE_NAME] == "example.com/gpu"
    assert register.attributes[attrs.ENDPOINT] == registration.request.endpoint
    assert register.attributes[attrs.ATTEMPT] == 1

    ok, refused = allocates(spans)
    assert ok.kind == SPAN_KIND_SERVER
    assert ok.trace_id.hex() == CALLER_TRACE_ID
    assert ok.parent_span_id.hex() == CALLER_SPAN_ID
    assert refused.trace_id.hex() != CALLER_TRACE_ID
    assert refused.parent_span_id == b""  # a root: the kubelet sends no trace context
    assert ok.attributes[attrs.RESOURCE_NAME] == "example.com/gpu"
    assert ok.attributes[attrs.REQUESTED_IDS] == ids
    assert ok.attributes[attrs.ALLOCATION_SIZE] == 2
    assert ok.attributes[attrs.DEVICE_LIST_STRATEGY] == "envvar"
    assert ok.status_code != STATUS_ERROR
    assert refused.status_code == STATUS_ERROR
    assert refused.attributes[attrs.ERROR_CODE] == "INVALID_ARGUMENT"
    assert refused.attributes[attrs.REFUSED_IDS] == ["GPU-x"]

    for span in (register, ok, refused):
        assert span.resource["service.name"] == "gpu-device-plugin"
        assert span.resource["service.version"] == "0.1.0"
        assert span.resource["k8s.node.name"] == "node-a"


def child_pids(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


async def test_a_killed_export_process_does_not_hurt_serving(
    kubelet: KubeletSim, fake_config: Path, receiver: OtlpReceiver
) -> None:
    process = await start_exporting_plugin(kubelet.folder, fake_config, receiver.endpoint)
    try:
        registration = await kubelet.wait_registered(timeout=15)
        [exporter] = child_pids(process.pid)
        os.kill(exporter, signal.SIGKILL)
        stub = registration.stub()
        request = pb.AllocateRequest(
            container_requests=[pb.ContainerAllocateRequest(devices_ids=[fake_uuid(0)])]
        )
        for _ in range(50):
            response = await asyncio.wait_for(stub.Allocate(request), 5)
            assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(0)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert log.count("span export process") == 1, log
