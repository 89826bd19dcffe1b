"""The NVML backend: real GPUs through nvidia-ml-py.

NVML is initialised once per process (`NvmlSession`) and shared with the health
loop; nothing else calls nvmlInit/nvmlShutdown. The library is injected so tests
run against a fake that implements the subset used here (`NvmlLibrary`).

pynvml's types, as met here: handles are ctypes pointers (never keyed, compared
or hashed: a GPU is named by its index or UUID), strings may come back as bytes
from older bindings, structs are ctypes structures read by field, NVMLError
carries NVML's return code as `.value`, and GetCpuAffinity answers a ctypes
array of 64-bit words.

A GPU whose reads fail with NVML_ERROR_GPU_IS_LOST is still listed (under its
UUID, which NVML keeps) but Unhealthy with the reason, never "Healthy, 0 MiB".
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gpu_device_plugin.discovery.driver_root import DriverRoot
from gpu_device_plugin.discovery.nvml_topology import read_topology
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Device, Health, Inventory, MigMode
from gpu_device_plugin.inventory.model import sorted_devices
from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode

log = logging.getLogger(__name__)

# Node-wide device nodes a GPU container needs when they exist on the host.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# Of those, the one no GPU container works without: its absence is warned about.
# (nvidia-uvm and nvidia-modeset appear only once their kernel modules load.)
REQUIRED_CONTROL_NODE = "nvidiactl"

T = TypeVar("T")
# NVML_ERROR_NOT_SUPPORTED: the answer to a MIG query on a GPU without MIG.
_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_GPU_IS_LOST = 15
_NVML_DEVICE_MIG_ENABLE = 1
LOST_REASON = HealthReason("GPU is lost", ReasonCode.GPU_LOST)


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


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes for strings.
    return value.decode() if isinstance(value, bytes) else value


def _code(err: Exception) -> int | None:
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


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
    driver_root: DriverRoot = field(default_factory=DriverRoot)
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
        dev = self.driver_root.dev
        missing: list[str] = []
        unidentified: list[tuple[int, str]] = []
        devices = [
            d for d in (self._device(lib, index, dev, missing, unidentified) for index in range(count)) if d
        ]
        control = [n for n in CONTROL_NODES if (dev / n).exists()]
        if devices and REQUIRED_CONTROL_NODE not in control:
            missing.append(str(dev / REQUIRED_CONTROL_NODE))
        if missing:
            # Once per discovery, not once per Allocate: --pass-device-specs leaves these out.
            log.warning(
                "device nodes not found: %s; containers are not handed them (--pass-device-specs)",
                ", ".join(missing),
            )
        for device in devices:
            _warn_mig(device)
        return Inventory(
            devices=sorted_devices(devices),
            # Never raises: what cannot be read is left unknown and logged.
            topology=read_topology(lib, devices),
            backend=self.name,
            driver_version=driver,
            cuda_version=cuda,
            control_nodes=tuple(f"/dev/{n}" for n in control),
            dev_root=str(dev),
            unidentified=tuple(unidentified),
        )

    def _device(
        self,
        lib: NvmlLibrary,
        index: int,
        dev: Path,
        missing: list[str],
        unidentified: list[tuple[int, str]],
    ) -> Device | None:
        try:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(lib.nvmlDeviceGetUUID(handle))
        except lib.NVMLError as err:
            if _code(err) == _NVML_ERROR_GPU_IS_LOST:
                # Without a UUID there is no id to advertise it under; the others still serve.
                log.error("GPU %d is lost and cannot be identified: not advertised (%s)", index, err)
                unidentified.append((index, str(LOST_REASON)))
                return None
            raise DiscoveryError(f"GPU {index}: NVML cannot identify it: {err}") from err
        # Beyond the UUID every attribute is optional: a device that cannot tell
        # its NUMA node or PCI id is still a device, and refusing it would take
        # the whole node out of service.
        reads = _Reads(lib, index)
        minor = reads.get("minor number", lambda: lib.nvmlDeviceGetMinorNumber(handle))
        bus_id = reads.get("PCI info", lambda: _bus_id(lib.nvmlDeviceGetPciInfo(handle)))
        numa = reads.get("NUMA node", lambda: self._numa_node(lib, handle, bus_id))
        memory = reads.get("memory", lambda: lib.nvmlDeviceGetMemoryInfo(handle).total)
        capability = reads.get(
            "compute capability", lambda: tuple(lib.nvmlDeviceGetCudaComputeCapability(handle))
        )
        name = reads.get("name", lambda: _text(lib.nvmlDeviceGetName(handle)))
        mig_capable, mig_mode = _mig(lib, handle, reads)
        node = dev / f"nvidia{minor}" if minor is not None else None
        if node is not None and not node.exists():
            missing.append(str(node))
        if reads.lost:
            log.warning("GPU %d (%s) is lost (NVML_ERROR_GPU_IS_LOST): advertised Unhealthy", index, uuid)
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
            health=Health.UNHEALTHY if reads.lost else Health.HEALTHY,
            health_reason=LOST_REASON if reads.lost else "",
            device_nodes=(f"/dev/nvidia{minor}",) if node is not None and node.exists() else (),
            mig_capable=mig_capable,
            mig_mode=mig_mode,
        )

    def _numa_node(self, lib: NvmlLibrary, handle: Any, bus_id: str | None) -> int | None:
        node: int | None
        try:
            node = lib.nvmlDeviceGetNumaNodeId(handle)
        except (lib.NVMLError, AttributeError) as err:
            if isinstance(err, lib.NVMLError) and _code(err) == _NVML_ERROR_GPU_IS_LOST:
                raise
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


@dataclass
class _Reads:
    """One GPU's optional reads: a failure leaves the value unknown; GPU_IS_LOST marks the GPU lost."""

    lib: NvmlLibrary
    index: int
    lost: bool = False

    def get(self, what: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except self.lib.NVMLError as err:
            if _code(err) == _NVML_ERROR_GPU_IS_LOST:
                self.lost = True  # said once for the GPU, not once per read
            else:
                log.warning("GPU %d: cannot read %s: %s", self.index, what, err)
            return None


def _mig(lib: NvmlLibrary, handle: Any, reads: _Reads) -> tuple[bool | None, MigMode | None]:
    """(MIG capable, MIG mode): any answer to the mode query means the GPU can do MIG."""
    try:
        current, pending = lib.nvmlDeviceGetMigMode(handle)
    except AttributeError:
        return None, None
    except lib.NVMLError as err:
        if _code(err) == _NVML_ERROR_NOT_SUPPORTED:
            return False, None
        if _code(err) == _NVML_ERROR_GPU_IS_LOST:
            reads.lost = True
        return None, None
    return True, MigMode(
        current=int(current) == _NVML_DEVICE_MIG_ENABLE, pending=int(pending) == _NVML_DEVICE_MIG_ENABLE
    )


def _warn_mig(device: Device) -> None:
    mode = device.mig_mode
    if mode is None or not (mode.current or mode.pending):
        return
    # MIG strategies (one resource per MIG profile) come later: until then the whole GPU is served.
    log.warning(
        "GPU %d (%s) has MIG mode %s: it is advertised as a whole GPU (MIG devices are not served yet)",
        device.index,
        device.uuid,
        mode.label,
    )


def _bus_id(pci_info: Any) -> str:
    # NVML gives "00000000:17:00.0" (8-digit domain); sysfs names it "0000:17:00.0".
    raw = _text(pci_info.busId).lower()
    domain, rest = raw.split(":", 1)
    return f"{domain[-4:]}:{rest}"


def _cuda_version(encoded: int) -> str:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
