"""A real OTLP/gRPC trace receiver for tests: the collector's TraceService, in-process.

Built on the opentelemetry-proto service definitions, so the plugin's exporter
speaks to it exactly as to a collector. Received spans are flattened into
`ReceivedSpan`s; `wait_for` waits on a condition variable, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: plain(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int  # opentelemetry.proto.trace.v1.Status.StatusCode: 0 unset, 1 ok, 2 error
    kind: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    events: tuple[tuple[str, dict[str, Any]], ...]


class OtlpReceiver(trace_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = grpc.aio.server()
        trace_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def __aenter__(self) -> OtlpReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def Export(
        self, request: trace_service.ExportTraceServiceRequest, context: Any
    ) -> trace_service.ExportTraceServiceResponse:
        received = [
            ReceivedSpan(
                name=span.name,
                attributes=attributes(span.attributes),
                resource=attributes(resource_spans.resource.attributes),
                status_code=span.status.code,
                kind=span.kind,
                trace_id=span.trace_id,
                span_id=span.span_id,
                parent_span_id=span.parent_span_id,
                events=tuple((e.name, attributes(e.attributes)) for e in span.events),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        async with self._changed:
            self.spans.extend(received)
            self.exports += 1
            self._changed.notify_all()
        return trace_service.ExportTraceServiceResponse()

    async def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        async def until() -> list[ReceivedSpan]:
            async with self._changed:
                await self._changed.wait_for(lambda: condition(self.spans))
                return list(self.spans)

        return await asyncio.wait_for(until(), timeout)
