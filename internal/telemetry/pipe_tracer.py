"""A tracer whose spans end as span_codec tuples: the tracer of the span-export process mode.

Why not the SDK's Tracer here: on this machine an SDK span of an Allocate
costs about 28 us in the serving process (11 us to start, 7 us for its seven
attributes, 6 us to become the tuple the pipe carries): most of it is
opentelemetry.attributes checking every value, each under a lock, for spans
that are only ever pickled and sent away: 40 % of issue 6's budget (10 % of
an Allocate p99 of about 0.7 ms) before any export work. A span here is a slotted object that keeps what
it is given and, when it ends, builds the tuple itself (about 8 us for the same
span, its attributes and its end).
What stays the SDK's: the sampler (OTEL_TRACES_SAMPLER and _ARG) and the id
generator, taken from an SDK TracerProvider, the span limits (the SDK's
SpanLimits, reading the OTEL_*_LIMIT variables of this process, as the export
process does), and the whole of the export, in the export process. That process rebuilds each span
and checks its attribute values there (span_codec.SpanDecoder), off the path
the kubelet waits on.

Kept from the SDK's span, because an SRE would notice otherwise:
- sampling: the sampler decides record/drop per span, a dropped span is the
  API's NonRecordingSpan, and a recorded but unsampled span is not exported;
- status: OK is final, UNSET never overwrites, a description only with ERROR;
- limits: at most max_span_attributes attributes and max_events events, the
  oldest making room and counted as dropped (ListAndWatch's span lives as long
  as its stream and gains an event per update);
- record_exception: the same `exception` event and attributes;
- an ended span ignores every later change.
Spans are changed from the event loop's thread; the few threads that make
spans of their own (health sources) change only their own spans, so the
plain dict and deque need no lock.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from time import time_ns
from types import TracebackType
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, Sampler
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

from gpu_device_plugin.telemetry.span_codec import ScopeTuple, SpanTuple, context_to_tuple

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class SpanSink(Protocol):
    """Where finished spans go: span_pipe.SpanPipe, or a test's decoder."""

    def send(self, plain: SpanTuple) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...

    def shutdown(self) -> None: ...


class PipeTracerProvider(trace.TracerProvider):
    def __init__(
        self,
        sink: SpanSink,
        *,
        sampler: Sampler,
        id_generator: IdGenerator,
        limits: SpanLimits | None = None,
    ) -> None:
        self.sink = sink
        self.sampler = sampler
        self.id_generator = id_generator
        self.limits = limits or SpanLimits()
        self._tracers: dict[tuple[Any, ...], PipeTracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> PipeTracer:
        key = (
            instrumenting_module_name,
            instrumenting_library_version,
            schema_url,
            tuple(sorted((k, _frozen(v)) for k, v in attributes.items())) if attributes else None,
        )
        tracer = self._tracers.get(key)
        if tracer is None:
            scope: ScopeTuple = (*key[:3], dict(attributes) if attributes else None)
            tracer = self._tracers[key] = PipeTracer(self, scope)
        return tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.sink.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.sink.shutdown()


class PipeTracer(trace.Tracer):
    def __init__(self, provider: PipeTracerProvider, scope: ScopeTuple) -> None:
        self.sink = provider.sink
        self.scope = scope
        self.limits = provider.limits
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._random_flag = TraceFlags.RANDOM_TRACE_ID if self._ids.is_trace_id_random() else 0

    def _decide(
        self,
        parent: SpanContext | None,
        context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link],
    ) -> tuple[Decision, TraceFlags, Any, types.Attributes]:
        """The sampler's decision, flags, trace state and attributes for a new span."""
        if self._sampler is DEFAULT_ON:
            # The SDK's default, parent-based always-on, decided without its result
            # objects: a root is sampled, a child follows its parent.
            if parent is None:
                return Decision.RECORD_AND_SAMPLE, _SAMPLED, None, attributes
            if parent.trace_flags.sampled:
                return Decision.RECORD_AND_SAMPLE, _SAMPLED, parent.trace_state, attributes
            return Decision.DROP, TraceFlags(TraceFlags.DEFAULT), parent.trace_state, attributes
        result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
        flags = _SAMPLED if result.decision is Decision.RECORD_AND_SAMPLE else TraceFlags(TraceFlags.DEFAULT)
        return result.decision, flags, result.trace_state, result.attributes

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        links = links or ()
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and not parent.is_valid:
            parent = None
        trace_id = self._ids.generate_trace_id() if parent is None else parent.trace_id
        decision, flags, state, kept = self._decide(parent, context, trace_id, name, kind, attributes, links)
        random_flag = self._random_flag if parent is None else parent.trace_flags & TraceFlags.RANDOM_TRACE_ID
        if random_flag:
            flags = TraceFlags(flags | random_flag)
        span_context = SpanContext(
            trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state
        )
        if decision is Decision.DROP:
            return trace.NonRecordingSpan(span_context)
        return PipeSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            kept,
            links,
            start_time,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
            exported=decision is Decision.RECORD_AND_SAMPLE,
        )

    # The API declares its own (private) context-manager type here; a plain
    # contextmanager behaves the same in every `with`.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def _frozen(value: Any) -> Any:
    # As the SDK: a list is kept as a tuple, so that the caller's later edit cannot change a span.
    return tuple(value) if type(value) is list else value


class PipeSpan(trace.Span):
    __slots__ = (
        "_attributes",
        "_context",
        "_dropped_attributes",
        "_end",
        "_events",
        "_events_added",
        "_exported",
        "_kind",
        "_links",
        "_links_added",
        "_name",
        "_parent",
        "_record_exception",
        "_set_status_on_exception",
        "_start",
        "_status",
        "_tracer",
    )

    def __init__(
        self,
        tracer: PipeTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link],
        start_time: int | None,
        *,
        record_exception: bool,
        set_status_on_exception: bool,
        exported: bool,
    ) -> None:
        limits = tracer.limits
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes: dict[str, Any] = {}
        self._dropped_attributes = 0
        self._events: deque[tuple[str, dict[str, Any], int]] = deque(maxlen=limits.max_events)
        self._events_added = 0
        self._links: deque[Link] = deque(maxlen=limits.max_links)
        self._links_added = 0
        self._status = _UNSET
        self._end: int | None = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._exported = exported
        if attributes:
            self.set_attributes(attributes)
        for link in links:
            self.add_link(link.context, link.attributes)
        self._start = start_time if start_time is not None else time_ns()

    # -- the API -------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end is not None:
            return
        mine = self._attributes
        room = self._tracer.limits.max_span_attributes
        for key, value in attributes.items():
            # As the SDK's BoundedAttributes: a key set again becomes the newest, and
            # when full the oldest key makes room.
            if key in mine:
                del mine[key]
            elif room is not None and len(mine) >= room:
                self._dropped_attributes += 1
                if not mine:  # a limit of 0: nothing is kept
                    continue
                del mine[next(iter(mine))]
            mine[key] = _frozen(value)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end is None:
            plain = {key: _frozen(value) for key, value in attributes.items()} if attributes else {}
            self._events.append((name, plain, timestamp if timestamp is not None else time_ns()))
            self._events_added += 1

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        # As the SDK: a link to nothing is kept only when it carries something; over
        # the limit the oldest link makes room.
        if self._end is not None or not (context.is_valid or attributes or context.trace_state):
            return
        self._links_added += 1
        if self._links.maxlen != 0:
            self._links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        new = status if isinstance(status, Status) else Status(status, description)
        if new.status_code is not StatusCode.UNSET:
            self._status = new

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        event: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end = end_time if end_time is not None else time_ns()
        if not self._exported:
            return
        tracer = self._tracer
        parent = self._parent
        status = self._status
        events = self._events
        links = self._links
        tracer.sink.send(
            (
                self._name,
                context_to_tuple(self._context),
                context_to_tuple(parent) if parent is not None else None,
                self._kind.value,
                self._start,
                end,
                status.status_code.value,
                status.description,
                self._attributes,
                tuple(events),
                tuple((context_to_tuple(link.context), dict(link.attributes or {})) for link in links),
                tracer.scope,
                (self._dropped_attributes, self._events_added - len(events), self._links_added - len(links)),
            )
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)
