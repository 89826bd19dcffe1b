"""Registering with the kubelet, and waiting for it when it is not there yet.

The kubelet dials back and asks for our options within its 10 s timeout, so
registration is only attempted once our own server answers. A missing or
refusing kubelet is normal during node start-up: wait with capped backoff and
say once where we are waiting.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink, result_label

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"


#: The kubelet is local and answers fast once up: retry quickly, no jitter needed.
REGISTRATION_BACKOFF = Backoff(initial_s=0.1, cap_s=5.0, jitter=0.0)


async def register_once(kubelet_socket: Path, request: pb.RegisterRequest, *, timeout: float) -> None:
    async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
        await pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout)


async def register_until_accepted(
    kubelet_socket: Path,
    request: pb.RegisterRequest,
    *,
    tracer: trace.Tracer,
    backoff: Backoff = REGISTRATION_BACKOFF,
    attempt_timeout: float = 5.0,
    metrics: MetricsSink = NULL_METRICS,
    parent: otel_context.Context | None = None,
) -> int:
    """Register, retrying until the kubelet accepts; returns the number of attempts.

    Each attempt is a "Register" span, a child of `parent` when given (the
    KubeletRestart span that made this registration necessary)."""
    waiting_said = ""
    for attempt, delay in enumerate(backoff.delays(), start=1):
        with tracer.start_as_current_span("Register", context=parent) as span:
            span.set_attributes(
                {
                    attrs.RESOURCE_NAME: request.resource_name,
                    attrs.ENDPOINT: request.endpoint,
                    attrs.ATTEMPT: attempt,
                }
            )
            try:
                await register_once(kubelet_socket, request, timeout=attempt_timeout)
            except grpc.aio.AioRpcError as err:
                metrics.registration(result_label(err.code()))
                span.set_attribute(attrs.ERROR_CODE, str(err.code().name))
                span.set_status(trace.Status(trace.StatusCode.ERROR, err.details() or ""))
                reason = _reason(kubelet_socket, err)
                if reason != waiting_said:
                    log.warning("waiting for the kubelet at %s: %s", kubelet_socket, reason)
                    waiting_said = reason
            else:
                metrics.registration(result_label(None))
                log.info(
                    "registered as %s (endpoint %s, attempt %d)",
                    request.resource_name,
                    request.endpoint,
                    attempt,
                )
                return attempt
        await asyncio.sleep(delay)
    raise AssertionError("unreachable: backoff delays never end")


def _reason(kubelet_socket: Path, err: grpc.aio.AioRpcError) -> str:
    if not kubelet_socket.exists():
        return "kubelet.sock does not exist yet"
    if err.code() is grpc.StatusCode.UNAVAILABLE:
        return "kubelet.sock refuses connections"
    return f"registration refused: {err.code().name}: {err.details()}"
