"""A real OTLP/gRPC receiver for tests: the collector's TraceService and MetricsService, in-process.

Built on the opentelemetry-proto service definitions, so the plugin's exporter
speaks to it exactly as to a collector. Received spans are flattened into
`ReceivedSpan`s; `wait_for` waits on a condition variable, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_service
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

Item = TypeVar("Item")


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


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of one metric, as an OTLP backend stores it."""

    name: str
    kind: str  # the Metric's data field: sum, gauge or histogram
    unit: str
    description: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float  # sums and gauges; a histogram's count
    monotonic: bool = False
    histogram_sum: float = 0.0
    bounds: tuple[float, ...] = ()


def points(request: metrics_service.ExportMetricsServiceRequest) -> list[ReceivedPoint]:
    found = []
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for point in data.data_points:
                    common = {
                        "name": metric.name,
                        "kind": kind,
                        "unit": metric.unit,
                        "description": metric.description,
                        "attributes": attributes(point.attributes),
                        "resource": resource,
                    }
                    if kind == "histogram":
                        found.append(
                            ReceivedPoint(
                                **common,
                                value=point.count,
                                histogram_sum=point.sum,
                                bounds=tuple(point.explicit_bounds),
                            )
                        )
                    else:
                        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                        monotonic = kind == "sum" and data.is_monotonic
                        found.append(ReceivedPoint(**common, value=value, monotonic=monotonic))
    return found


class _MetricsService(metrics_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(
        self, request: metrics_service.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service.ExportMetricsServiceResponse:
        await self.receiver.add_points(points(request))
        return metrics_service.ExportMetricsServiceResponse()


class OtlpReceiver(trace_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        # Every export's points, in arrival order: the latest export of a series is its value now.
        self.points: list[ReceivedPoint] = []
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
        metrics_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), self._server)
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

    async def _until(
        self, received: list[Item], condition: Callable[[list[Item]], bool], timeout: float
    ) -> list[Item]:
        async def until() -> list[Item]:
            async with self._changed:
                await self._changed.wait_for(lambda: condition(received))
                return list(received)

        return await asyncio.wait_for(until(), timeout)

    async def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        return await self._until(self.spans, condition, timeout)

    async def add_points(self, received: list[ReceivedPoint]) -> None:
        async with self._changed:
            self.points.extend(received)
            self._changed.notify_all()

    async def wait_for_points(
        self, condition: Callable[[list[ReceivedPoint]], bool], timeout: float = 10.0
    ) -> list[ReceivedPoint]:
        return await self._until(self.points, condition, timeout)
