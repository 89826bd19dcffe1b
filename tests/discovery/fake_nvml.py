"""A fake NVML: the subset of pynvml that discovery calls, configurable per GPU.

It implements our own seam (`NvmlLibrary` in discovery/nvml.py), not pynvml's
internals: tests hand it to `NvmlSession` the way production hands it pynvml.
Handles are ctypes pointers as pynvml's are (testsupport/nvml_handles.py): a new,
unhashable object per call, so code that keys or compares them fails here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from testsupport.nvml_handles import DeviceHandles

GPU_IS_LOST = 15
NOT_SUPPORTED = 3


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError (whose str() is NVML's own message; `.value` its code)."""

    value = 999  # NVML_ERROR_UNKNOWN unless said otherwise

    def __init__(self, message: str, value: int | None = None) -> None:
        super().__init__(message)
        if value is not None:
            self.value = value


@dataclass
class FakeGpu:
    uuid: str | bytes
    name: str | bytes = "NVIDIA H100 80GB HBM3"
    minor: int = 0
    memory_bytes: int = 81559 * 1024 * 1024
    # NVML spells the PCI domain with 8 hex digits.
    bus_id: str | bytes = "00000000:17:00.0"
    numa_node: int = 0
    compute_capability: tuple[int, int] = (9, 0)
    # Names of NVML calls that raise NVMLError for this GPU, e.g. {"nvmlDeviceGetMemoryInfo"}.
    failing: frozenset[str] = frozenset()
    # Every call but these answers NVML_ERROR_GPU_IS_LOST (NVML keeps the UUID of a lost GPU).
    lost: bool = False
    # nvmlDeviceGetMigMode's (current, pending); None: NOT_SUPPORTED (no MIG on this GPU).
    mig_mode: tuple[int, int] | None = None


@dataclass
class FakeNvml:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver_version: str | bytes = "550.54.15"
    cuda_driver_version: int = 12040
    # Raised by nvmlInit (e.g. NVMLError("NVML Shared Library Not Found")).
    init_error: Exception | None = None
    # System-level calls that raise NVMLError, e.g. {"nvmlDeviceGetCount"}.
    failing: frozenset[str] = frozenset()
    # Older bindings have no nvmlDeviceGetNumaNodeId at all.
    has_numa_call: bool = True
    # Bindings older than MIG have no nvmlDeviceGetMigMode.
    has_mig_call: bool = True
    init_calls: int = 0
    shutdown_calls: int = 0
    _handles: DeviceHandles = field(init=False)

    NVMLError = NVMLError

    def __post_init__(self) -> None:
        self._handles = DeviceHandles(len(self.gpus))

    def _system(self, call: str) -> None:
        if call in self.failing:
            raise NVMLError(f"{call}: Unknown Error")

    def _device(self, handle: Any, call: str) -> FakeGpu:
        gpu = self.gpus[self._handles.index(handle)]
        if call in gpu.failing:
            raise NVMLError(f"{call}: Not Supported", NOT_SUPPORTED)
        if gpu.lost and call not in ("nvmlDeviceGetHandleByIndex", "nvmlDeviceGetUUID"):
            raise NVMLError("GPU is lost", GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._system("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        handle = self._handles.handle(index)
        self._device(handle, "nvmlDeviceGetHandleByIndex")
        return handle

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        return self._device(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return self._device(handle, "nvmlDeviceGetMinorNumber").minor

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        total = self._device(handle, "nvmlDeviceGetMemoryInfo").memory_bytes
        return SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        return SimpleNamespace(busId=self._device(handle, "nvmlDeviceGetPciInfo").bus_id)

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._device(handle, "nvmlDeviceGetCudaComputeCapability").compute_capability

    @property
    def nvmlDeviceGetMigMode(self) -> Any:
        if not self.has_mig_call:
            raise AttributeError("module 'pynvml' has no attribute 'nvmlDeviceGetMigMode'")
        return self._mig_mode

    def _mig_mode(self, handle: Any) -> list[int]:
        mode = self._device(handle, "nvmlDeviceGetMigMode").mig_mode
        if mode is None:
            raise NVMLError("Not Supported", NOT_SUPPORTED)
        return list(mode)

    def _numa_node_id(self, handle: Any) -> int:
        return self._device(handle, "nvmlDeviceGetNumaNodeId").numa_node

    @property
    def nvmlDeviceGetNumaNodeId(self) -> Any:
        if not self.has_numa_call:
            raise AttributeError("module 'pynvml' has no attribute 'nvmlDeviceGetNumaNodeId'")
        return self._numa_node_id
