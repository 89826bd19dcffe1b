"""The first discovery: what the backend finds at start, or zero devices when it cannot."""

from __future__ import annotations

import logging

from opentelemetry import trace

from gpu_device_plugin.discovery.backend import DiscoveryBackend
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.telemetry import attributes as attrs

log = logging.getLogger(__name__)
_NO_TRACER: trace.Tracer = trace.NoOpTracer()


def initial_inventory(
    backend: DiscoveryBackend, *, fail_on_init_error: bool, tracer: trace.Tracer = _NO_TRACER
) -> Inventory:
    """First discovery. NVML failing at start either ends the process or serves nothing.

    Serving zero devices (rather than crash-looping) keeps the DaemonSet pod
    quiet on nodes that match its selector but have no usable GPU. A "Discover"
    span says which backend found what, or why it found nothing.
    """
    with tracer.start_as_current_span(
        "Discover", attributes={attrs.DISCOVERY_BACKEND: backend.name}, set_status_on_exception=False
    ) as span:
        try:
            inventory = backend.discover()
        except DiscoveryError as err:
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(err)))
            span.set_attribute(attrs.DEVICE_COUNT, 0)
            if fail_on_init_error:
                raise
            log.error("%s; serving zero devices (--fail-on-init-error is off)", err)
            return Inventory(devices=(), backend=backend.name)
        span.set_attributes(
            {
                attrs.DEVICE_COUNT: len(inventory.devices),
                attrs.HEALTHY_COUNT: inventory.healthy_count,
                attrs.DRIVER_VERSION: inventory.driver_version or "",
                attrs.CUDA_VERSION: inventory.cuda_version or "",
            }
        )
    log.info(
        "discovered %d device(s) with the %s backend (driver %s, CUDA %s)",
        len(inventory.devices),
        inventory.backend,
        inventory.driver_version or "n/a",
        inventory.cuda_version or "n/a",
    )
    return inventory
