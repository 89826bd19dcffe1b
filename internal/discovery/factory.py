"""Choosing a backend from the configuration and running the first discovery."""

from __future__ import annotations

import logging

from opentelemetry import trace

from gpu_device_plugin.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.discovery.base import DiscoveryBackend
from gpu_device_plugin.discovery.driver_root import DriverRoot
from gpu_device_plugin.discovery.fake import FakeBackend
from gpu_device_plugin.discovery.nvml import NvmlBackend, NvmlSession, bind_library, load_pynvml
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.telemetry import attributes as attrs

log = logging.getLogger(__name__)
_NO_TRACER: trace.Tracer = trace.NoOpTracer()


def make_backend(config: DiscoveryConfig) -> DiscoveryBackend:
    if config.kind is DiscoveryKind.FAKE:
        return FakeBackend(config_path=config.fake_config, count=config.fake_devices)
    try:
        library = load_pynvml()
    except ImportError as err:  # pragma: no cover - nvidia-ml-py is a dependency
        raise DiscoveryError(f"nvidia-ml-py is not installed: {err}") from err
    root = DriverRoot(config.driver_root)
    # Looked up at nvmlInit, not here: a root without a library is NVML failing to
    # start, which --no-fail-on-init-error turns into zero devices served.
    session = NvmlSession(library, prepare=lambda: bind_library(library, root.nvml_library()))
    return NvmlBackend(session, driver_root=root)


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
