"""A server span for every device-plugin RPC: a thin grpc.aio interceptor of our own.

Why not opentelemetry-instrumentation-grpc's aio interceptor: per call it
builds a new method handler, a wrapt proxy of the servicer context and
several context managers, and parses the peer address and user agent of a
caller that is always the kubelet on a unix socket. bench/tracing.py measured
Allocate p50 +23 % with it against +13 to 16 % with this one (back to back,
same machine and runs). This one wraps each method's handler once, starts the
span with attributes computed once per method, and reads the call's metadata
only to continue a caller's trace.

The spans carry the same names (`/v1beta1.DevicePlugin/Allocate`), kind
(SERVER) and semantic-convention attributes (rpc.system, rpc.service,
rpc.method, rpc.grpc.status_code) as the instrumentation's, so saved
searches do not change. A streaming RPC (ListAndWatch) gets one span for the
stream's whole life; the servicer adds an event to it per update sent.

Status: an RPC the servicer aborts (a refused request) gets the abort's code
and ERROR; any other exception is recorded on the span. The servicer may set
a more precise status and attributes on the current span itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_STATUS = "rpc.grpc.status_code"

_OK = grpc.StatusCode.OK.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
# W3C trace context and baggage, the propagators' default; lower case as gRPC delivers them.
_PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


def _remote_context(context: grpc.aio.ServicerContext[Any, Any]) -> otel_context.Context | None:
    """The caller's trace, when its metadata carries one (the kubelet's does not)."""
    metadata = context.invocation_metadata() or ()
    carrier = {key: value for key, value in metadata if key in _PROPAGATION_KEYS}
    return propagate.extract(carrier) if carrier else None


def _finish(span: trace.Span, context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
    code = context.code()
    if isinstance(error, grpc.aio.AbortError) and isinstance(code, grpc.StatusCode):
        span.set_attribute(RPC_STATUS, code.value[0])
        if span.is_recording() and code is not grpc.StatusCode.OK:
            details = context.details()
            description = f"{code.name}: {details.decode() if isinstance(details, bytes) else details or ''}"
            span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        return
    if isinstance(error, Exception):
        span.set_attribute(RPC_STATUS, _UNKNOWN)
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


class ServerSpans(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Opens a SERVER span around every RPC of the server it is installed on."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        # Wrapped handlers by the original: handlers are per method and the same
        # object on every call, so the wrapping happens once per method.
        self._wrapped: dict[grpc.RpcMethodHandler, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler, handler_call_details.method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name, RPC_STATUS: _OK}
        if handler.request_streaming:
            # The device-plugin API has no client-streaming RPC: leave any untraced.
            return handler
        if handler.response_streaming:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method, attributes))
        return handler._replace(unary_unary=self._unary(handler.unary_unary, method, attributes))

    def _unary(self, behavior: Behavior, name: str, attributes: dict[str, Any]) -> Behavior:
        tracer = self._tracer

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # start_span + attach rather than start_as_current_span: the same, without
            # two context-manager layers per call.
            span = tracer.start_span(
                name, context=_remote_context(context), kind=trace.SpanKind.SERVER, attributes=attributes
            )
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                return await behavior(request, context)
            except BaseException as error:
                _finish(span, context, error)
                raise
            finally:
                otel_context.detach(token)
                span.end()

        return traced

    def _stream(self, behavior: Behavior, name: str, attributes: dict[str, Any]) -> Behavior:
        tracer = self._tracer

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            with tracer.start_as_current_span(
                name,
                context=_remote_context(context),
                kind=trace.SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as error:
                    _finish(span, context, error)
                    raise

        return traced
