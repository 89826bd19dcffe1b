"""pipe_tracer's spans read, once exported, as the SDK's own would.

Each scenario runs the same API calls on the SDK's tracer and on pipe_tracer's,
and the spans that come out (pipe spans through pickle and the export
process's decoder) must be equal in everything an SRE sees in a backend:
names, kinds, parents, attributes, events, links, status and drop counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gpu_device_plugin.telemetry.pipe_tracer import PipeSpan
from support.spans import SpanRecorder

Scenario = Callable[[trace.Tracer], None]

REMOTE_SAMPLED = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
REMOTE_UNSAMPLED = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))


def nested_with_attributes_and_events(tracer: trace.Tracer) -> None:
    outer = tracer.start_as_current_span("outer", kind=SpanKind.SERVER, attributes={"gpu.ids": ["a", "b"]})
    with outer, tracer.start_as_current_span("inner") as inner:
        inner.set_attribute("gpu.score", 12)
        inner.set_attributes({"gpu.ok": True, "gpu.ratio": 0.5, "gpu.names": ("x", "y")})
        inner.add_event("devices sent", {"devices": 8, "healthy": 7})
        inner.update_name("inner renamed")


def status_rules(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("error then ok") as span:
        span.set_status(Status(StatusCode.ERROR, "INVALID_ARGUMENT: unknown device GPU-9"))
        span.set_status(StatusCode.UNSET)  # never overwrites
    with tracer.start_as_current_span("ok is final") as span:
        span.set_status(StatusCode.OK)
        span.set_status(StatusCode.ERROR, "too late")
    with tracer.start_as_current_span("code and description") as span:
        span.set_status(StatusCode.ERROR, "FAILED_PRECONDITION: unhealthy")


def an_exception_escapes(tracer: trace.Tracer) -> None:
    with pytest.raises(ValueError, match="GPU-3"), tracer.start_as_current_span("fails"):
        raise ValueError("device GPU-3 is gone")
    with tracer.start_as_current_span("records") as span:
        span.record_exception(KeyError("GPU-4"), attributes={"gpu.device_id": "GPU-4"})


def an_exception_not_recorded(tracer: trace.Tracer) -> None:
    with (
        pytest.raises(RuntimeError, match="not on the span"),
        tracer.start_as_current_span("quiet", record_exception=False, set_status_on_exception=False),
    ):
        raise RuntimeError("not on the span")


def changes_after_the_end_are_ignored(tracer: trace.Tracer) -> None:
    span = tracer.start_span("ended", attributes={"before": 1})
    span.end()
    span.set_attribute("after", 2)
    span.add_event("after")
    span.set_status(StatusCode.ERROR, "after")
    span.end()  # a second end sends nothing more


def a_list_changed_after_it_was_set(tracer: trace.Tracer) -> None:
    ids = ["GPU-0"]
    with tracer.start_as_current_span("copied", attributes={"gpu.ids": ids}) as span:
        ids.append("GPU-1")
        span.set_attribute("gpu.more", ids)
        ids.append("GPU-2")


def values_otlp_cannot_carry_are_dropped(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("odd values") as span:
        span.set_attributes({"kept": "yes", "a dict": {"no": 1}, "mixed": [1, "two"]})  # type: ignore[dict-item]
        span.add_event("event", {"an object": object(), "kept": 3})  # type: ignore[dict-item]


def continues_a_remote_parent(tracer: trace.Tracer) -> None:
    parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_SAMPLED))
    with tracer.start_as_current_span("child of remote", context=parent):
        pass
    dropped = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_UNSAMPLED))
    with tracer.start_as_current_span("child of unsampled remote", context=dropped) as span:
        assert not span.is_recording()


def links_and_explicit_times(tracer: trace.Tracer) -> None:
    span = tracer.start_span(
        "linked", links=[Link(REMOTE_SAMPLED, {"why": "retry"})], start_time=1_000, attributes={"n": 1}
    )
    span.add_event("at", timestamp=1_500)
    span.end(end_time=2_000)


def over_the_limits(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("crowded", attributes={"a0": 0, "a1": 1}) as span:
        span.set_attributes({f"b{i}": i for i in range(5)})
        span.set_attribute("a0", "replaced")  # an existing key always fits
        for i in range(5):
            span.add_event(f"update {i}")


def many_links(tracer: trace.Tracer) -> None:
    nothing = SpanContext(0, 0, is_remote=False)  # invalid: kept only when it carries something
    others = [SpanContext(0xABC, 0x100 + i, is_remote=True) for i in range(3)]
    span = tracer.start_span("linked a lot", links=[Link(c, {"n": i}) for i, c in enumerate(others)])
    span.add_link(nothing)
    span.add_link(nothing, {"why": "named anyway"})
    span.add_link(REMOTE_SAMPLED, {"why": "last"})
    span.end()


def long_values(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span(
        "long", attributes={"gpu.reason": "XID 79: fallen off the bus"}
    ) as span:
        span.set_attribute("gpu.ids", ["GPU-0123456789", "GPU-9"])
        span.add_event("devices sent", {"gpu.reason": "a long reason indeed"})
        span.add_link(REMOTE_SAMPLED, {"why": "because of a long story"})


SCENARIOS: list[Scenario] = [
    nested_with_attributes_and_events,
    status_rules,
    an_exception_escapes,
    an_exception_not_recorded,
    changes_after_the_end_are_ignored,
    a_list_changed_after_it_was_set,
    values_otlp_cannot_carry_are_dropped,
    continues_a_remote_parent,
    links_and_explicit_times,
    over_the_limits,
    many_links,
    long_values,
]

# Span limits (the SDK's SpanLimits reads them when a provider is made): small, none
# at all, and value-length limits for spans only or for everything.
LIMITS: dict[str, dict[str, str]] = {
    "small": {
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "3",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "2",
    },
    "zero": {
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "0",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "0",
    },
    "short span values": {"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5"},
    "short values": {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5"},
}


def view(spans: tuple[ReadableSpan, ...]) -> list[dict[str, Any]]:
    """What a backend shows of each span, with ids replaced by positions and the stack
    trace by its last line (the frames between the raise and the span differ)."""
    positions = {s.context.span_id: n for n, s in enumerate(spans) if s.context is not None}

    def parent(span: ReadableSpan) -> object:
        if span.parent is None:
            return None
        return positions.get(span.parent.span_id, (hex(span.parent.trace_id), span.parent.is_remote))

    def attributes(values: Any) -> dict[str, Any]:
        plain = dict(values or {})
        if "exception.stacktrace" in plain:
            plain["exception.stacktrace"] = plain["exception.stacktrace"].strip().splitlines()[-1]
        return plain

    return [
        {
            "name": s.name,
            "kind": s.kind,
            "parent": parent(s),
            "same trace as parent": s.parent is None or s.parent.trace_id == s.context.trace_id,  # type: ignore[union-attr]
            "sampled": s.context.trace_flags.sampled,  # type: ignore[union-attr]
            "attributes": attributes(s.attributes),
            "events": [(e.name, attributes(e.attributes), e.dropped_attributes) for e in s.events],
            "event times": [e.timestamp for e in s.events] if s.start_time == 1_000 else None,
            "times": (s.start_time, s.end_time) if s.start_time == 1_000 else None,
            "links": [
                (link.context.span_id, dict(link.attributes or {}), link.dropped_attributes)
                for link in s.links
            ],
            "status": (s.status.status_code, s.status.description),
            "dropped": (s.dropped_attributes, s.dropped_events, s.dropped_links),
        }
        for s in spans
    ]


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_a_pipe_span_exports_as_the_sdk_span_would(
    scenario: Scenario, limits: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, setting in limits.items():
        monkeypatch.setenv(name, setting)
    exported = {}
    for kind in ("sdk", "pipe"):
        recorder = SpanRecorder(kind)
        scenario(recorder.provider.get_tracer("gpu_device_plugin", "1.2.3"))
        exported[kind] = view(recorder.spans)
    assert exported["pipe"] == exported["sdk"]
    assert exported["sdk"], "the scenario exported nothing to compare"


def test_limits_keep_the_latest_attributes_and_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "3")
    recorder = SpanRecorder("pipe")
    over_the_limits(recorder.provider.get_tracer("test"))
    [span] = recorder.spans
    assert dict(span.attributes or {}) == {"b2": 2, "b3": 3, "b4": 4, "a0": "replaced"}
    assert [e.name for e in span.events] == ["update 2", "update 3", "update 4"]
    assert (span.dropped_attributes, span.dropped_events) == (4, 2)


@pytest.mark.parametrize(
    ("sampler", "arg", "exported"),
    [("always_off", None, 0), ("traceidratio", "0", 0), ("always_on", None, 1), ("traceidratio", "1", 1)],
)
def test_the_sampler_from_the_environment_decides(
    sampler: str, arg: str | None, exported: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    recorder = SpanRecorder("pipe")
    tracer = recorder.provider.get_tracer("test")
    with tracer.start_as_current_span("maybe") as span:
        assert span.is_recording() is bool(exported)
        # Logs still get a trace id to print: the span context is valid either way.
        assert span.get_span_context().is_valid
    assert len(recorder.spans) == exported


def test_a_recorded_but_unsampled_span_is_not_exported() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class RecordOnly(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_ONLY, {"sampler.said": "record"})

        def get_description(self) -> str:
            return "RecordOnly"

    recorder = SpanRecorder("pipe")
    recorder.provider.sampler = RecordOnly()  # type: ignore[union-attr]
    recorder.provider._tracers.clear()  # type: ignore[union-attr]
    with recorder.provider.get_tracer("test").start_as_current_span("kept here only") as span:
        assert span.is_recording()
        assert isinstance(span, PipeSpan)
        assert not span.get_span_context().trace_flags.sampled
    assert recorder.spans == ()


def test_the_current_span_is_the_pipe_span_for_code_that_asks() -> None:
    recorder = SpanRecorder("pipe")
    tracer = recorder.provider.get_tracer("test")
    span = tracer.start_span("rpc")
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        assert trace.get_current_span() is span
        trace.get_current_span().set_attribute("gpu.score", 3)
    finally:
        otel_context.detach(token)
        span.end()
    assert dict(recorder.spans[0].attributes or {}) == {"gpu.score": 3}


def test_the_scope_is_the_tracers_name_and_version() -> None:
    recorder = SpanRecorder("pipe")
    provider = recorder.provider
    assert provider.get_tracer("gpu_device_plugin", "1.2.3") is provider.get_tracer(
        "gpu_device_plugin", "1.2.3"
    )
    with provider.get_tracer("gpu_device_plugin", "1.2.3").start_as_current_span("scoped"):
        pass
    scope = recorder.spans[0].instrumentation_scope
    assert scope is not None
    assert (scope.name, scope.version) == ("gpu_device_plugin", "1.2.3")
