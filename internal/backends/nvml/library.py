"""NVML itself: loading the bindings, pointing them at a driver root, and the one session.

NVML is initialised once per process (`NvmlSession`) and shared by discovery and
the health loop; nothing else calls nvmlInit/nvmlShutdown. The library is
injected so tests run against a fake that implements the subset we use
(`NvmlLibrary`).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode

# NVML return codes (nvml.h) that the backend acts on; named here once, for discovery,
# topology and health alike.
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NOT_FOUND = 6
ERROR_TIMEOUT = 10
ERROR_GPU_IS_LOST = 15
LOST_REASON = HealthReason("GPU is lost", ReasonCode.GPU_LOST)


def error_code(err: Exception) -> int | None:
    """NVML's return code of an error: pynvml's NVMLError subclasses carry it as `.value`."""
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


def nvml_text(value: str | bytes) -> str:
    """A string from pynvml: older nvidia-ml-py releases return bytes."""
    return value.decode() if isinstance(value, bytes) else value


log = logging.getLogger(__name__)


class NvmlLibrary(Protocol):
    """The part of pynvml this project calls; pynvml itself satisfies it."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...
    def nvmlDeviceGetNumaNodeId(self, handle: Any) -> int: ...
    # Bindings older than MIG lack it: AttributeError means "unknown".
    def nvmlDeviceGetMigMode(self, handle: Any) -> Sequence[int]: ...
    # MIG devices (mig.py).
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any: ...
    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int: ...
    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int: ...
    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gpuInstanceId: int) -> Any: ...
    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any: ...
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int) -> Any: ...
    def nvmlDeviceGetAttributes_v2(self, handle: Any) -> Any: ...
    # Topology (topology.py). Old bindings may lack any of these: callers
    # treat AttributeError like an NVML error, as "unknown".
    def nvmlDeviceGetTopologyCommonAncestor(self, device1: Any, device2: Any) -> int: ...
    def nvmlDeviceGetNvLinkState(self, device: Any, link: int) -> int: ...
    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: Any, link: int) -> Any: ...
    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: Any, link: int) -> int: ...
    def nvmlDeviceGetCpuAffinity(self, handle: Any, cpuSetSize: int) -> Sequence[int]: ...


def load_pynvml() -> NvmlLibrary:
    import pynvml

    lib: NvmlLibrary = pynvml
    return lib


def bind_library(pynvml: Any, path: Path | None) -> None:
    """Make pynvml use the libnvidia-ml at `path` (None: its own lookup by soname).

    pynvml loads CDLL("libnvidia-ml.so.1") at the first nvmlInit unless its
    module-level `nvmlLib` is already set, so setting it (under pynvml's own
    lock) is the one way to point it at a file. LD_LIBRARY_PATH is read by the
    loader at process start only, and preloading relies on the file's SONAME.
    """
    if path is None:
        return
    with pynvml.libLoadLock:
        if pynvml.nvmlLib is not None:
            return  # loaded already in this process: init/shutdown keep it
        try:
            pynvml.nvmlLib = ctypes.CDLL(str(path))
        except OSError as err:
            raise DiscoveryError(f"cannot load {path}: {err}") from err


@dataclass
class NvmlSession:
    """NVML initialised for the life of the process; the one owner of init/shutdown."""

    lib: NvmlLibrary
    # Called once before nvmlInit: points the bindings at the driver root's library.
    prepare: Callable[[], None] | None = None
    _open: bool = field(default=False, init=False)

    def open(self) -> None:
        if self._open:
            return
        if self.prepare is not None:
            self.prepare()  # DiscoveryError naming what it searched
        try:
            self.lib.nvmlInit()
        except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, OSError ...
            # What to check, by NVML's error code (pynvml's NVML_ERROR_*): a bare
            # "NVML Shared Library Not Found" leaves a node's owner guessing.
            checks = {
                12: "libnvidia-ml.so.1 was not found: is the NVIDIA driver installed on this node? In a pod "
                "the NVIDIA container toolkit injects it (runtimeClassName: nvidia, or nvidia as "
                "containerd's default runtime); a driver installed elsewhere needs --driver-root",
                9: "the NVIDIA kernel driver is not loaded on this node (is `nvidia-smi` working there?)",
                4: "no permission to open the NVIDIA devices (/dev/nvidiactl): run privileged, or give "
                "the container the devices",
                18: "the driver's library and kernel module differ in version (a driver upgrade "
                "without a reboot?)",
            }
            code = error_code(err)
            hint = checks.get(code) if code is not None else None
            if hint is None and isinstance(err, OSError):
                hint = checks[12]  # the loader's own failure, raised before pynvml classified it
            detail = f"{err}: {hint}" if hint else str(err)
            raise DiscoveryError(f"NVML could not be initialised: {' '.join(detail.split())}") from err
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.lib.nvmlShutdown()
            except self.lib.NVMLError as err:
                log.warning("nvmlShutdown failed: %s", err)
