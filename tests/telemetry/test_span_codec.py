"""A finished span survives the trip to the export process: tuple, pickle, rebuilt span."""

from __future__ import annotations

import pickle

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from gpu_device_plugin.telemetry.span_codec import (
    SpanDecoder,
    resource_from_tuple,
    resource_to_tuple,
    span_to_tuple,
)

RESOURCE = Resource({"service.name": "gpu-device-plugin", "k8s.node.name": "node-a"}, "https://schema")


def finished_spans() -> tuple[ReadableSpan, ...]:
    """A parent, and a child with every kind of field set, as the SDK hands them to processors."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("gpu_device_plugin", "0.1.0")
    with (
        tracer.start_as_current_span("KubeletRestart") as restart,
        tracer.start_as_current_span(
            "/v1beta1.DevicePlugin/Allocate",
            kind=SpanKind.SERVER,
            links=[Link(restart.get_span_context(), {"link.reason": "restart"})],
            record_exception=False,
            set_status_on_exception=False,
        ) as allocate,
    ):
        allocate.set_attributes(
            {
                "gpu.requested_ids": ["GPU-a", "GPU-b"],
                "gpu.allocation_size": 2,
                "gpu.score": 0.75,
                "gpu.must_include": False,
            }
        )
        allocate.add_event("health.changed", {"gpu.device": "GPU-a", "gpu.xid": 79})
        allocate.set_status(Status(StatusCode.ERROR, "INVALID_ARGUMENT: unknown device"))
    return exporter.get_finished_spans()


def round_trip(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    wire = pickle.dumps(("spans", [span_to_tuple(s) for s in spans]))
    resource = resource_from_tuple(pickle.loads(pickle.dumps(resource_to_tuple(RESOURCE))))
    _, plain = pickle.loads(wire)
    decoder = SpanDecoder(resource)
    return [decoder.span(p) for p in plain]


def test_a_span_comes_out_equal_on_the_other_side() -> None:
    spans = finished_spans()
    # Finished in this order: the child ends first.
    child, parent = round_trip(spans)
    original_child, original_parent = spans

    assert child.name == "/v1beta1.DevicePlugin/Allocate"
    assert child.kind is SpanKind.SERVER
    assert child.context == original_child.context
    assert child.parent is not None
    assert parent.context is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id == original_parent.context.trace_id  # type: ignore[union-attr]
    assert parent.parent is None
    assert dict(child.attributes or {}) == {
        "gpu.requested_ids": ("GPU-a", "GPU-b"),
        "gpu.allocation_size": 2,
        "gpu.score": 0.75,
        "gpu.must_include": False,
    }
    [event] = child.events
    assert (event.name, dict(event.attributes or {}), event.timestamp) == (
        "health.changed",
        {"gpu.device": "GPU-a", "gpu.xid": 79},
        original_child.events[0].timestamp,
    )
    [link] = child.links
    assert link.context == parent.context
    assert dict(link.attributes or {}) == {"link.reason": "restart"}
    assert child.status.status_code is StatusCode.ERROR
    assert child.status.description == "INVALID_ARGUMENT: unknown device"
    assert (child.start_time, child.end_time) == (original_child.start_time, original_child.end_time)
    assert child.resource.attributes == RESOURCE.attributes
    assert child.resource.schema_url == "https://schema"
    assert child.instrumentation_scope == original_child.instrumentation_scope


def test_the_otlp_encoding_of_the_rebuilt_spans_is_the_original_one() -> None:
    # What the collector receives: byte for byte what the in-process exporter would send.
    spans = finished_spans()
    assert encode_spans(round_trip(spans)) == encode_spans(spans)


def test_dropped_counts_cross_too() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("busy") as span:
        span.set_attributes({f"a{i}": i for i in range(130)})  # the SDK keeps 128
    [original] = exporter.get_finished_spans()
    [rebuilt] = round_trip((original,))
    assert original.dropped_attributes == 2
    assert rebuilt.dropped_attributes == 2
    assert encode_spans([rebuilt]) == encode_spans([original])
