"""The discovery backends by kind: the one place that knows which kinds exist.

A kind with no factory here is a configuration error, never a silent default
to NVML. The wiring asks the backend it gets for everything else (its health
source included), so nothing outside a backend's folder tests for its type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.backends.fake.discover import fake_backend
from gpu_device_plugin.backends.nvml.discover import nvml_backend
from gpu_device_plugin.discovery.backend import DiscoveryBackend
from gpu_device_plugin.errors import ConfigError

BackendFactory = Callable[[DiscoveryConfig], DiscoveryBackend]

BACKENDS: Mapping[DiscoveryKind, BackendFactory] = {
    DiscoveryKind.NVML: nvml_backend,
    DiscoveryKind.FAKE: fake_backend,
}


def make_backend(
    config: DiscoveryConfig, backends: Mapping[DiscoveryKind, BackendFactory] = BACKENDS
) -> DiscoveryBackend:
    """The backend of `config.kind`; ConfigError naming the known kinds when it has none."""
    factory = backends.get(config.kind)
    if factory is None:
        known = ", ".join(sorted(backends))
        raise ConfigError("discovery", f"no backend of kind {str(config.kind)!r} (known: {known})")
    return factory(config)
