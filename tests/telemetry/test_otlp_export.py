"""Over the wire: the real `serve` process exports its spans to a real OTLP/gRPC receiver with
the SDK's batch processor and exporter, all of them, even with every CPU busy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry import attributes as attrs
from testsupport.otlp import OtlpReceiver, ReceivedSpan
from testsupport.process import serve_argv

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


async def start_exporting_plugin(
    plugin_dir: Path, config: Path, endpoint: str, *, delay_ms: int | None = 100
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.node.name=node-a",
        }
    )
    if delay_ms is not None:
        env["OTEL_BSP_SCHEDULE_DELAY"] = str(delay_ms)
    return await asyncio.create_subprocess_exec(
        *serve_argv(config, plugin_dir), env=env, stderr=asyncio.subprocess.PIPE
    )


def allocates(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == ALLOCATE]


async def test_registration_and_allocate_spans_reach_an_otlp_receiver(
    kubelet: StandinKubelet, fake_config: Path, receiver: OtlpReceiver
) -> None:
    process = await start_exporting_plugin(kubelet.plugin_dir, fake_config, receiver.endpoint)
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


@contextlib.contextmanager
def busy_cpus(count: int) -> Iterator[None]:
    """`count` processes spinning at normal priority, as data loaders keep a GPU node's cores busy."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


async def test_every_span_arrives_and_serve_exits_cleanly_with_the_cpus_busy(
    kubelet: StandinKubelet, fake_config: Path, receiver: OtlpReceiver
) -> None:
    calls = 100
    with busy_cpus(2):
        # The batch processor's default 5 s delay: most spans are still queued at SIGTERM,
        # so it is the SDK's shutdown flush that must deliver them.
        process = await start_exporting_plugin(
            kubelet.plugin_dir, fake_config, receiver.endpoint, delay_ms=None
        )
        try:
            stub = (await kubelet.wait_registered(timeout=60)).stub()
            request = pb.AllocateRequest(
                container_requests=[pb.ContainerAllocateRequest(devices_ids=[fake_uuid(0)])]
            )
            for _ in range(calls):
                await asyncio.wait_for(stub.Allocate(request), 30)
        finally:
            process.send_signal(signal.SIGTERM)
            # Generous: the promise (exit within 2 s) is measured in bench/tracing.py, not here.
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()

    spans = await receiver.wait_for(lambda spans: len(allocates(spans)) >= calls, timeout=10)
    assert len(allocates(spans)) == calls
    names = {s.name for s in spans}
    # The stream's span ends only as the server stops: it too was flushed at exit.
    assert {"Discover", "Register", "/v1beta1.DevicePlugin/ListAndWatch"} <= names
