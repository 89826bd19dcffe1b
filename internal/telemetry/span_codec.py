"""Finished spans as plain tuples, and back: what crosses the pipe to the export process.

A tuple of ints, strings, floats and dicts pickles in C in a few microseconds
and needs no schema on either side; the OTLP protobuf encoding (~40 us a span
in pure Python) happens only in the export process. Both sides run this same
module from the same install, so the layout needs no version field.

Kept: name, trace and span ids, flags and trace state, parent (with its
remote flag), kind, start and end times, status and its description,
attributes, events, links, instrumentation scope, and the counts of dropped
attributes, events and links. The resource is the same for every span of the
process: it crosses once, not per span.

Two producers build this layout: span_to_tuple, from an SDK span, and
pipe_tracer.PipeSpan.end, from a span that never was one. The latter keeps
attribute values unchecked, so the decoder checks them (the SDK's
BoundedAttributes: types, value length limit), in the export process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

#: (trace_id, span_id, trace_flags, is_remote, trace_state items or None)
ContextTuple = tuple[int, int, int, bool, tuple[tuple[str, str], ...] | None]
#: (name, version, schema_url, attributes or None)
ScopeTuple = tuple[str, str | None, str | None, dict[str, Any] | None]
SpanTuple = tuple[Any, ...]
ResourceTuple = tuple[dict[str, Any], str]

_KINDS = {kind.value: kind for kind in SpanKind}
_CODES = {code.value: code for code in StatusCode}


def context_to_tuple(context: SpanContext) -> ContextTuple:
    state = context.trace_state
    return (
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        context.is_remote,
        tuple(state.items()) if state else None,
    )


def _span_context(plain: ContextTuple) -> SpanContext:
    trace_id, span_id, flags, is_remote, state = plain
    return SpanContext(
        trace_id,
        span_id,
        is_remote,
        TraceFlags(flags),
        TraceState(list(state)) if state else None,
    )


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    # The SDK's BoundedAttributes already hold immutable values (lists made tuples).
    return dict(attributes) if attributes else {}


def resource_to_tuple(resource: Resource) -> ResourceTuple:
    return dict(resource.attributes), resource.schema_url


def resource_from_tuple(plain: ResourceTuple) -> Resource:
    attributes, schema_url = plain
    return Resource(attributes, schema_url)


def span_to_tuple(span: ReadableSpan) -> SpanTuple:
    """The finished span as builtins only; runs on the thread that ended the span."""
    context = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    status = span.status
    assert context is not None  # every span the SDK ends has one
    return (
        span.name,
        context_to_tuple(context),
        context_to_tuple(parent) if parent is not None else None,
        span.kind.value,
        span.start_time,
        span.end_time,
        status.status_code.value,
        status.description,
        _attributes(span.attributes),
        tuple((e.name, _attributes(e.attributes), e.timestamp) for e in span.events),
        tuple((context_to_tuple(link.context), _attributes(link.attributes)) for link in span.links),
        (scope.name, scope.version, scope.schema_url, _attributes(scope.attributes) or None)
        if scope is not None
        else None,
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
    )


class RebuiltSpan(ReadableSpan):
    """A span rebuilt from its tuple, still reporting what the original dropped."""

    def __init__(self, *, dropped: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


class SpanDecoder:
    """Rebuilds ReadableSpans for one resource, sharing scope objects between spans."""

    def __init__(self, resource: Resource, limits: SpanLimits | None = None) -> None:
        self.resource = resource
        self._limits = limits or SpanLimits()
        self._scopes: dict[tuple[Any, ...], InstrumentationScope] = {}

    def _checked(
        self, attributes: Mapping[str, Any], count_limit: int | None, value_limit: int | None
    ) -> BoundedAttributes:
        """Values of a type OTLP cannot carry are dropped (and logged) here, as the SDK's span would."""
        return BoundedAttributes(count_limit, attributes, immutable=True, max_value_len=value_limit)

    def _scope(self, plain: ScopeTuple | None) -> InstrumentationScope | None:
        if plain is None:
            return None
        name, version, schema_url, attributes = plain
        key = (name, version, schema_url, tuple(sorted((attributes or {}).items())))
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = InstrumentationScope(name, version, schema_url, attributes)
        return scope

    def span(self, plain: SpanTuple) -> ReadableSpan:
        (
            name,
            context,
            parent,
            kind,
            start,
            end,
            code,
            description,
            attributes,
            events,
            links,
            scope,
            dropped,
        ) = plain
        limits = self._limits
        return RebuiltSpan(
            name=name,
            context=_span_context(context),
            parent=_span_context(parent) if parent is not None else None,
            resource=self.resource,
            # As the SDK: the span-attribute length limit for the span's own values, the
            # general one for its events' and links'.
            attributes=self._checked(
                attributes, limits.max_span_attributes, limits.max_span_attribute_length
            ),
            events=tuple(
                Event(
                    n, self._checked(a, limits.max_event_attributes, limits.max_attribute_length), timestamp=t
                )
                for n, a, t in events
            ),
            links=tuple(
                Link(
                    _span_context(c),
                    self._checked(a, limits.max_link_attributes, limits.max_attribute_length),
                )
                for c, a in links
            ),
            kind=_KINDS[kind],
            status=Status(_CODES[code], description),
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope(scope),
            dropped=dropped,
        )
