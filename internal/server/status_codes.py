"""Our exceptions as gRPC status codes: the one place that decides the mapping."""

from __future__ import annotations

import grpc

from gpu_device_plugin.errors import DeviceUnavailableError, PluginError, RequestError


def status_code(error: PluginError) -> grpc.StatusCode:
    # Unhealthy devices are a state of the node, not a malformed request: the
    # same request may succeed once the device recovers.
    if isinstance(error, DeviceUnavailableError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, RequestError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL
