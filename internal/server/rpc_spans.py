"""What a device-plugin RPC's span says, in one place: the SERVER span and its attributes.

`RpcSpans` is a grpc.aio server interceptor: every unary or server-streaming
RPC runs in a SERVER span named as opentelemetry-instrumentation-grpc names
it (`/v1beta1.DevicePlugin/Allocate`), with the semantic-convention attributes
(rpc.system, rpc.service, rpc.method, rpc.grpc.status_code), so saved searches
do not change. A caller's W3C trace context is continued (the kubelet sends
none). A streaming RPC (ListAndWatch) gets one span for the stream's whole
life; the servicer adds an event to it per update sent.

Why not opentelemetry-instrumentation-grpc's aio interceptor: it would change
what the spans say. It follows the server status conventions, so a refused
request (INVALID_ARGUMENT) is not an error and a crashing servicer keeps
status code 0, it records every abort as an exception event, and it adds the
caller's user agent; it also costs more CPU per call (bench/tracing.py
measures both) and brings two more dependencies. With tracing off no
interceptor is installed at all.

Status: an RPC the servicer aborts (a refused request) gets the abort's code
and ERROR; any other exception is recorded on the span. The servicer may set a
more precise status on the current span itself.

The functions below are the device-plugin attributes: pure functions from a
request, the allocator's answer or an error to a dict. The servicer calls them
only when the current span is recording, so with tracing off none of them
runs. Attribute names come from telemetry.attributes. Ids are flattened over
all container requests of one RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from gpu_device_plugin.allocator import AllocateOptions, ContainerAllocation, PreferredPolicy, set_score
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.errors import MAX_NAMED_IDS, RequestError, cut_id
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.telemetry import attributes as attrs

Attributes = dict[str, AttributeValue]
Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]

RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_STATUS = attrs.GRPC_STATUS_CODE

_OK = grpc.StatusCode.OK.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
# W3C trace context and baggage, the propagators' default; lower case as gRPC delivers them.
_PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


class RpcSpans(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Runs every RPC in a SERVER span of `tracer`."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        # Per method: the handler the server found, and its traced copy (built once).
        self._traced: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        cached = self._traced.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        traced = self._trace(handler, method)
        self._traced[method] = (handler, traced)
        return traced

    def _trace(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").partition("/")
        attributes = {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name, RPC_STATUS: _OK}
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behavior = self._unary(handler.unary_unary, method, attributes)
            return grpc.unary_unary_rpc_method_handler(behavior, **serializers)
        if handler.unary_stream is not None:
            behavior = self._stream(handler.unary_stream, method, attributes)
            return grpc.unary_stream_rpc_method_handler(behavior, **serializers)
        return handler  # client streaming: the device-plugin API has none, so untraced

    def _unary(self, behavior: Behavior, name: str, attributes: Attributes) -> Behavior:
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

    def _stream(self, behavior: Behavior, name: str, attributes: Attributes) -> Behavior:
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


def allocate_attributes(
    resource_name: str, options: AllocateOptions, request: pb.AllocateRequest
) -> Attributes:
    requested = [i for req in request.container_requests for i in req.devices_ids]
    return {
        attrs.RESOURCE_NAME: resource_name,
        attrs.CONTAINERS: len(request.container_requests),
        attrs.REQUESTED_IDS: requested,
        attrs.ALLOCATION_SIZE: len(requested),
        attrs.DEVICE_LIST_STRATEGY: options.list_strategy.value,
        attrs.DEVICE_ID_STRATEGY: options.id_strategy.value,
    }


def allocate_response_attributes(allocations: list[ContainerAllocation]) -> Attributes:
    """What the containers were handed, in the words the pod sees (its env or CDI names)."""
    return {attrs.CONTAINER_DEVICES: [name for a in allocations for name in a.container_devices]}


def policy_name(policy: PreferredPolicy | None) -> str:
    """`topology` for topology_policy: the function's name without the suffix."""
    name = getattr(policy, "__name__", type(policy).__name__)
    return str(name).removesuffix("_policy")


def preferred_request_attributes(
    resource_name: str, request: pb.PreferredAllocationRequest, policy: PreferredPolicy | None
) -> Attributes:
    reqs = request.container_requests
    return {
        attrs.RESOURCE_NAME: resource_name,
        attrs.PREFERRED_POLICY: policy_name(policy),
        attrs.CONTAINERS: len(reqs),
        attrs.AVAILABLE_IDS: [i for req in reqs for i in req.available_deviceIDs],
        attrs.MUST_INCLUDE_IDS: [i for req in reqs for i in req.must_include_deviceIDs],
        attrs.ALLOCATION_SIZE: sum(req.allocation_size for req in reqs),
    }


def preferred_response_attributes(
    inventory: Inventory, response: pb.PreferredAllocationResponse
) -> Attributes:
    chosen = [list(resp.deviceIDs) for resp in response.container_responses]
    return {
        attrs.CHOSEN_IDS: [i for ids in chosen for i in ids],
        # Per container, summed: each container's set is scored on its own.
        attrs.SCORE: sum(set_score(inventory, ids) for ids in chosen),
    }


def refusal_attributes(code: grpc.StatusCode, err: RequestError) -> Attributes:
    return {
        attrs.REFUSED_IDS: list(err.ids),
        attrs.ERROR_CODE: str(code.name),
        attrs.GRPC_STATUS_CODE: int(code.value[0]),
    }


def health_race_attributes(
    unhealthy: Sequence[str], unknown: Sequence[str], used: Sequence[str]
) -> Attributes:
    """The health-race event's attributes; a few ids each, cut like an error's."""

    def few(ids: Sequence[str]) -> list[str]:
        return [cut_id(i) for i in ids[:MAX_NAMED_IDS]]

    return {
        attrs.RACE_UNHEALTHY_IDS: few(unhealthy),
        attrs.RACE_UNKNOWN_IDS: few(unknown),
        attrs.RACE_USED_IDS: few(used),
    }
