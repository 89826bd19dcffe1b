"""A fake NVML: the subset of pynvml that discovery calls, configurable per GPU.

It implements our own seam (`NvmlLibrary` in discovery/nvml.py), not pynvml's
internals: tests hand it to `NvmlSession` the way production hands it pynvml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError (whose str() is NVML's own message)."""


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
    init_calls: int = 0
    shutdown_calls: int = 0

    NVMLError = NVMLError

    def _system(self, call: str) -> None:
        if call in self.failing:
            raise NVMLError(f"{call}: Unknown Error")

    def _device(self, handle: FakeGpu, call: str) -> FakeGpu:
        if call in handle.failing:
            raise NVMLError(f"{call}: Not Supported")
        return handle

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

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        gpu = self.gpus[index]
        return self._device(gpu, "nvmlDeviceGetHandleByIndex")

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str | bytes:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str | bytes:
        return self._device(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetMinorNumber(self, handle: FakeGpu) -> int:
        return self._device(handle, "nvmlDeviceGetMinorNumber").minor

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        total = self._device(handle, "nvmlDeviceGetMemoryInfo").memory_bytes
        return SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetPciInfo(self, handle: FakeGpu) -> Any:
        return SimpleNamespace(busId=self._device(handle, "nvmlDeviceGetPciInfo").bus_id)

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeGpu) -> tuple[int, int]:
        return self._device(handle, "nvmlDeviceGetCudaComputeCapability").compute_capability

    def _numa_node_id(self, handle: FakeGpu) -> int:
        return self._device(handle, "nvmlDeviceGetNumaNodeId").numa_node

    @property
    def nvmlDeviceGetNumaNodeId(self) -> Any:
        if not self.has_numa_call:
            raise AttributeError("module 'pynvml' has no attribute 'nvmlDeviceGetNumaNodeId'")
        return self._numa_node_id
