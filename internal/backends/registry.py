"""Choosing the discovery backend named by the configuration."""

from __future__ import annotations

from gpu_device_plugin.backends.fake.discover import FakeBackend
from gpu_device_plugin.backends.nvml.discover import NvmlBackend
from gpu_device_plugin.backends.nvml.driver_root import DriverRoot
from gpu_device_plugin.backends.nvml.library import NvmlSession, bind_library, load_pynvml
from gpu_device_plugin.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.discovery.backend import DiscoveryBackend
from gpu_device_plugin.errors import DiscoveryError


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
