"""RpcSpans, the server interceptor: one SERVER span per RPC, over a real unix socket.

A small DevicePlugin servicer of the test's own answers, refuses (abort) or
fails (raises) on cue, so each outcome's span can be checked on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.server.rpc_spans import RpcSpans
from testsupport.spans import SpanRecorder

ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
LIST_AND_WATCH = "/v1beta1.DevicePlugin/ListAndWatch"


class Servicer(pb_grpc.DevicePluginServicer):
    """Allocate answers, refuses "bad" or fails on "boom"; ListAndWatch sends two lists then waits."""

    def __init__(self) -> None:
        self.stream_open = asyncio.Event()

    async def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        ids = [i for r in request.container_requests for i in r.devices_ids]
        trace.get_current_span().set_attribute("test.ids", ids)
        if "bad" in ids:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown device bad")
        if "boom" in ids:
            raise RuntimeError("the servicer broke")
        return pb.AllocateResponse(container_responses=[pb.ContainerAllocateResponse()])

    async def ListAndWatch(self, request: pb.Empty, context: Any) -> AsyncIterator[pb.ListAndWatchResponse]:
        for count in (1, 2):
            trace.get_current_span().add_event("sent", {"devices": count})
            yield pb.ListAndWatchResponse(devices=[pb.Device(ID=f"GPU-{i}") for i in range(count)])
        self.stream_open.set()
        await asyncio.Event().wait()  # a stream lives until the client goes


@pytest.fixture
async def traced_server(
    plugin_dir: Path, recorder: SpanRecorder
) -> AsyncIterator[tuple[pb_grpc.DevicePluginStub, SpanRecorder]]:
    tracer = recorder.provider.get_tracer("test")
    server = grpc.aio.server(interceptors=[RpcSpans(tracer)])
    pb_grpc.add_DevicePluginServicer_to_server(Servicer(), server)
    socket = plugin_dir / "traced.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        yield pb_grpc.DevicePluginStub(channel), recorder
    await server.stop(None)


def allocate(*ids: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))])


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_an_answered_rpc_is_one_server_span_with_the_rpc_attributes(traced_server) -> None:
    stub, recorder = traced_server
    await stub.Allocate(allocate("GPU-0"))
    await stub.Allocate(allocate("GPU-1"))

    spans = await recorder.wait_for(lambda spans: len(named(spans, ALLOCATE)) == 2)
    first, second = named(spans, ALLOCATE)
    assert first.kind is SpanKind.SERVER
    assert first.status.status_code is StatusCode.UNSET
    assert first.parent is None  # nobody upstream: a trace of its own
    assert dict(first.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "v1beta1.DevicePlugin",
        "rpc.method": "Allocate",
        "rpc.grpc.status_code": 0,
        "test.ids": ("GPU-0",),  # set by the servicer on the current span: it is this one
    }
    assert first.context.trace_id != second.context.trace_id


async def test_a_refused_rpc_has_its_grpc_code_and_error_status(traced_server) -> None:
    stub, recorder = traced_server
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Allocate(allocate("bad"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    [span] = named(await recorder.wait_for(lambda spans: bool(named(spans, ALLOCATE))), ALLOCATE)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "INVALID_ARGUMENT: unknown device bad"
    # An abort is the servicer's answer, not a crash: no exception event.
    assert not [e for e in span.events if e.name == "exception"]


async def test_a_failing_servicer_records_the_exception(traced_server) -> None:
    stub, recorder = traced_server
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Allocate(allocate("boom"))
    assert failed.value.code() is grpc.StatusCode.UNKNOWN

    [span] = named(await recorder.wait_for(lambda spans: bool(named(spans, ALLOCATE))), ALLOCATE)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: the servicer broke"
    [exception] = [e for e in span.events if e.name == "exception"]
    assert exception.attributes["exception.message"] == "the servicer broke"


async def test_a_caller_trace_is_continued(traced_server) -> None:
    stub, recorder = traced_server
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    traceparent = f"00-{trace_id:032x}-{parent_id:016x}-01"
    await stub.Allocate(allocate("GPU-0"), metadata=(("traceparent", traceparent),))

    [span] = named(await recorder.wait_for(lambda spans: bool(named(spans, ALLOCATE))), ALLOCATE)
    assert span.context.trace_id == trace_id
    assert span.parent is not None
    assert span.parent.span_id == parent_id
    assert span.parent.is_remote


async def test_a_stream_is_one_span_for_its_whole_life_with_the_servicers_events(traced_server) -> None:
    stub, recorder = traced_server
    stream = stub.ListAndWatch(pb.Empty())
    received = [len((await stream.read()).devices) for _ in range(2)]
    assert received == [1, 2]
    assert not named(recorder.spans, LIST_AND_WATCH), "the span must stay open while the stream is"

    stream.cancel()  # the kubelet going away
    [span] = named(await recorder.wait_for(lambda spans: bool(named(spans, LIST_AND_WATCH))), LIST_AND_WATCH)
    assert span.kind is SpanKind.SERVER
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("sent", {"devices": 1}),
        ("sent", {"devices": 2}),
    ]
    # A client hanging up is how every stream ends: not an error.
    assert span.status.status_code is not StatusCode.ERROR
