"""The NVML backend: real GPUs through nvidia-ml-py.

It reads what is on the node through the process's one NVML session
(library.py), which the health loop shares.

pynvml's types, as met here: handles are ctypes pointers (never keyed, compared
or hashed: a GPU is named by its index or UUID), strings may come back as bytes
from older bindings, structs are ctypes structures read by field, NVMLError
carries NVML's return code as `.value`, and GetCpuAffinity answers a ctypes
array of 64-bit words.

A GPU whose reads fail with NVML_ERROR_GPU_IS_LOST is still listed (under its
UUID, which NVML keeps) but Unhealthy with the reason, never "Healthy, 0 MiB".

The MIG devices of each GPU with MIG mode on are read by mig.py into
Inventory.mig_devices, whatever --mig-strategy is: which of them are served,
and what is warned about, is the resource plan's business (resources/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import trace

from gpu_device_plugin.backends.config import DiscoveryConfig
from gpu_device_plugin.backends.nvml.driver_root import DriverRoot
from gpu_device_plugin.backends.nvml.health import NvmlHealthSource
from gpu_device_plugin.backends.nvml.library import (
    ERROR_GPU_IS_LOST,
    ERROR_NOT_SUPPORTED,
    LOST_REASON,
    NvmlLibrary,
    NvmlSession,
    bind_library,
    error_code,
    load_pynvml,
    nvml_text,
)
from gpu_device_plugin.backends.nvml.mig import GpuLost, MigCaps, mig_caps_roots, read_mig_devices
from gpu_device_plugin.backends.nvml.topology import read_topology
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.health.source import HealthSource, HealthWiring
from gpu_device_plugin.health.status import NVML_EVENTS, NVML_LOOP
from gpu_device_plugin.health.tracker import HealthTracker
from gpu_device_plugin.inventory import Device, Health, Inventory, MigDevice, MigMode
from gpu_device_plugin.inventory.model import sorted_devices

log = logging.getLogger(__name__)

# Node-wide device nodes a GPU container needs when they exist on the host.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# Of those, the one no GPU container works without: its absence is warned about.
# (nvidia-uvm and nvidia-modeset appear only once their kernel modules load.)
REQUIRED_CONTROL_NODE = "nvidiactl"

T = TypeVar("T")
# NVML_ERROR_NOT_SUPPORTED: the answer to a MIG query on a GPU without MIG.
_NVML_DEVICE_MIG_ENABLE = 1


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
            driver = nvml_text(lib.nvmlSystemGetDriverVersion())
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
        parent_index = {d.id: d.index for d in devices}
        mig_devices: list[MigDevice] = []
        caps = MigCaps(mig_caps_roots(self.driver_root.path))
        for position, device in enumerate(devices):
            found, lost = _mig_devices(lib, device, caps, dev, missing)
            mig_devices += found
            if lost:
                devices[position] = replace(device, health=Health.UNHEALTHY, health_reason=LOST_REASON)
        if missing:
            # Once per discovery, not once per Allocate: --pass-device-specs leaves these out.
            log.warning(
                "device nodes not found: %s; containers are not handed them (--pass-device-specs)",
                ", ".join(missing),
            )
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
            mig_devices=tuple(sorted(mig_devices, key=lambda m: (parent_index[m.parent_id], m.index))),
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
            uuid = nvml_text(lib.nvmlDeviceGetUUID(handle))
        except lib.NVMLError as err:
            if error_code(err) == ERROR_GPU_IS_LOST:
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
        name = reads.get("name", lambda: nvml_text(lib.nvmlDeviceGetName(handle)))
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
            if isinstance(err, lib.NVMLError) and error_code(err) == ERROR_GPU_IS_LOST:
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

    def health_source(self, wiring: HealthWiring) -> HealthSource | None:
        """NVML events and probes of the devices found; with none there is nothing to watch."""
        if not wiring.cell.value.devices:
            return None
        source = NvmlHealthSource(
            session=self.session,
            cell=wiring.cell,
            tracker=HealthTracker(wiring.recovery),
            xids=wiring.ignored_xids,
            probe_interval_s=wiring.probe_interval_s,
            metrics=wiring.metrics,
            tracer=wiring.tracer or trace.NoOpTracer(),
            status=wiring.status,
        )
        return HealthSource(source.run, (NVML_LOOP, NVML_EVENTS))


def nvml_backend(config: DiscoveryConfig) -> NvmlBackend:
    """The backend on the driver root's NVML; nothing is loaded or initialised yet."""
    try:
        library = load_pynvml()
    except ImportError as err:  # pragma: no cover - nvidia-ml-py is a dependency
        raise DiscoveryError(f"nvidia-ml-py is not installed: {err}") from err
    root = DriverRoot(config.driver_root)
    # Looked up at nvmlInit, not here: a root without a library is NVML failing to
    # start, which --no-fail-on-init-error turns into zero devices served.
    session = NvmlSession(library, prepare=lambda: bind_library(library, root.nvml_library()))
    return NvmlBackend(session, driver_root=root)


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
            if error_code(err) == ERROR_GPU_IS_LOST:
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
        if error_code(err) == ERROR_NOT_SUPPORTED:
            return False, None
        if error_code(err) == ERROR_GPU_IS_LOST:
            reads.lost = True
        return None, None
    return True, MigMode(
        current=int(current) == _NVML_DEVICE_MIG_ENABLE, pending=int(pending) == _NVML_DEVICE_MIG_ENABLE
    )


def _mig_devices(
    lib: NvmlLibrary, device: Device, caps: MigCaps, dev: Path, missing: list[str]
) -> tuple[tuple[MigDevice, ...], bool]:
    """(the MIG devices of a GPU with MIG mode on, whether the GPU turned out lost meanwhile)."""
    if device.mig_mode is None or not device.mig_mode.current or not device.healthy:
        return (), False
    try:
        handle = lib.nvmlDeviceGetHandleByIndex(device.index)
        return read_mig_devices(lib, handle, device, caps, dev, missing), False
    except GpuLost:
        log.warning(
            "GPU %d (%s) is lost (NVML_ERROR_GPU_IS_LOST): advertised Unhealthy", device.index, device.uuid
        )
        return (), True
    except AttributeError as err:
        # Bindings older than MIG: the GPU's MIG devices cannot be listed.
        log.warning("GPU %d: this nvidia-ml-py cannot list MIG devices: %s", device.index, err)
        return (), False
    except lib.NVMLError as err:
        log.warning("GPU %d: cannot list its MIG devices: %s", device.index, err)
        return (), False


def _bus_id(pci_info: Any) -> str:
    # NVML gives "00000000:17:00.0" (8-digit domain); sysfs names it "0000:17:00.0".
    raw = nvml_text(pci_info.busId).lower()
    domain, rest = raw.split(":", 1)
    return f"{domain[-4:]}:{rest}"


def _cuda_version(encoded: int) -> str:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
