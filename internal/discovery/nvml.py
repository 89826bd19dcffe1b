"""The NVML backend: real GPUs through nvidia-ml-py.

NVML is initialised once per process (`NvmlSession`) and shared with the health
loop; nothing else calls nvmlInit/nvmlShutdown. The library is injected so tests
run against a fake that implements the subset used here (`NvmlLibrary`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gpu_device_plugin.discovery.nvml_topology import read_topology
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Device, Inventory
from gpu_device_plugin.inventory.model import sorted_devices

log = logging.getLogger(__name__)

# Node-wide device nodes a GPU container needs when they exist on the host.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")

T = TypeVar("T")
# NVML_ERROR_NOT_SUPPORTED: the answer to a MIG query on a GPU without MIG.
_NVML_ERROR_NOT_SUPPORTED = 3


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
    # Topology (nvml_topology.py). Old bindings may lack any of these: callers
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


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes for strings.
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class NvmlSession:
    """NVML initialised for the life of the process; the one owner of init/shutdown."""

    lib: NvmlLibrary
    _open: bool = field(default=False, init=False)

    def open(self) -> None:
        if self._open:
            return
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
            code = getattr(err, "value", None)
            hint = checks.get(code) if isinstance(code, int) else None
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


@dataclass
class NvmlBackend:
    session: NvmlSession
    dev_root: Path = Path("/dev")
    sysfs_root: Path = Path("/sys")
    name: str = "nvml"

    def discover(self) -> Inventory:
        self.session.open()
        lib = self.session.lib
        try:
            count = lib.nvmlDeviceGetCount()
            driver = _text(lib.nvmlSystemGetDriverVersion())
            cuda = _cuda_version(lib.nvmlSystemGetCudaDriverVersion())
        except lib.NVMLError as err:
            raise DiscoveryError(f"NVML could not list devices: {err}") from err
        devices = [self._device(lib, index) for index in range(count)]
        return Inventory(
            devices=sorted_devices(devices),
            # Never raises: what cannot be read is left unknown and logged.
            topology=read_topology(lib, devices),
            backend=self.name,
            driver_version=driver,
            cuda_version=cuda,
            control_nodes=tuple(
                str(self.dev_root / n) for n in CONTROL_NODES if (self.dev_root / n).exists()
            ),
        )

    def _device(self, lib: NvmlLibrary, index: int) -> Device:
        try:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(lib.nvmlDeviceGetUUID(handle))
        except lib.NVMLError as err:
            raise DiscoveryError(f"GPU {index}: NVML cannot identify it: {err}") from err
        # Beyond the UUID every attribute is optional: a device that cannot tell
        # its NUMA node or PCI id is still a device, and refusing it would take
        # the whole node out of service.
        minor = _optional(lib, index, "minor number", lambda: lib.nvmlDeviceGetMinorNumber(handle))
        bus_id = _optional(lib, index, "PCI info", lambda: _bus_id(lib.nvmlDeviceGetPciInfo(handle)))
        numa = _optional(lib, index, "NUMA node", lambda: self._numa_node(lib, handle, bus_id))
        memory = _optional(lib, index, "memory", lambda: lib.nvmlDeviceGetMemoryInfo(handle).total)
        capability = _optional(
            lib, index, "compute capability", lambda: tuple(lib.nvmlDeviceGetCudaComputeCapability(handle))
        )
        name = _optional(lib, index, "name", lambda: _text(lib.nvmlDeviceGetName(handle)))
        return Device(
            id=uuid,
            index=index,
            uuid=uuid,
            model=name or "unknown",
            memory_mib=(memory or 0) // (1024 * 1024),
            minor=minor,
            pci_bus_id=bus_id,
            numa_node=numa,
            compute_capability=(capability[0], capability[1]) if capability else None,
            device_nodes=(str(self.dev_root / f"nvidia{minor}"),) if minor is not None else (),
            mig_capable=_mig_capable(lib, handle),
        )

    def _numa_node(self, lib: NvmlLibrary, handle: Any, bus_id: str | None) -> int | None:
        node: int | None
        try:
            node = lib.nvmlDeviceGetNumaNodeId(handle)
        except (lib.NVMLError, AttributeError):
            # Older drivers and bindings lack the call; the kernel knows too.
            node = self._sysfs_numa_node(bus_id)
        return node if node is not None and node >= 0 else None

    def _sysfs_numa_node(self, bus_id: str | None) -> int | None:
        if bus_id is None:
            return None
        try:
            return int((self.sysfs_root / "bus/pci/devices" / bus_id / "numa_node").read_text())
        except (OSError, ValueError):
            return None


def _optional(lib: NvmlLibrary, index: int, what: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except lib.NVMLError as err:
        log.warning("GPU %d: cannot read %s: %s", index, what, err)
        return None


def _mig_capable(lib: NvmlLibrary, handle: Any) -> bool | None:
    # Any answer to the MIG mode query (enabled or not) means the GPU can do MIG.
    try:
        lib.nvmlDeviceGetMigMode(handle)
    except AttributeError:
        return None
    except lib.NVMLError as err:
        return False if getattr(err, "value", None) == _NVML_ERROR_NOT_SUPPORTED else None
    return True


def _bus_id(pci_info: Any) -> str:
    # NVML gives "00000000:17:00.0" (8-digit domain); sysfs names it "0000:17:00.0".
    raw = _text(pci_info.busId).lower()
    domain, rest = raw.split(":", 1)
    return f"{domain[-4:]}:{rest}"


def _cuda_version(encoded: int) -> str:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
