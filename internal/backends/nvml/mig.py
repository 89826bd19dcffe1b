"""MIG devices of a MIG-enabled GPU through NVML: UUIDs, GPU / compute instance ids, profiles, caps nodes.

For each MIG device slot (nvmlDeviceGetMaxMigDeviceCount, then
nvmlDeviceGetMigDeviceHandleByIndex; NOT_FOUND is an empty slot) it reads the
UUID, the GPU and compute instance ids, the GPU instance's profile (its id
through nvmlDeviceGetGpuInstanceById / nvmlGpuInstanceGetInfo, matched against
the parent's profile table: the profile's index gives the `+me`-style suffix)
and the compute instance's slices (nvmlDeviceGetAttributes), and names the
profile as NVIDIA does (inventory/mig_names.py).

The device nodes a container needs for the instance are
`/dev/nvidia-caps/nvidia-cap<N>` for its GPU instance and its compute instance,
N read from the driver's capability files
(`/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<G>/access`, and
`.../gi<G>/ci<C>/access`: "DeviceFileMinor: N"), as NVIDIA's plugin does.
They are looked for under the driver root first (a root laid out with them,
such as the NVML fake's), then in /proc itself: procfs is the kernel's, so a
driver container's root never holds the host's.

Never raises for one MIG device: a device that cannot be read is left out and
logged, and the GPU's other devices are still listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_device_plugin.backends.nvml.library import (
    ERROR_GPU_IS_LOST,
    ERROR_NOT_FOUND,
    NvmlLibrary,
    error_code,
    nvml_text,
)
from gpu_device_plugin.inventory import Device, MigDevice, MigProfile
from gpu_device_plugin.inventory.mig_names import memory_gb, profile_name, profile_suffix

log = logging.getLogger(__name__)

# NVML_GPU_INSTANCE_PROFILE_COUNT in current drivers; indexes beyond what a GPU offers answer an error.
PROFILE_COUNT = 0x12
CAPS_DIR = "proc/driver/nvidia/capabilities"
CAPS_NODE = "/dev/nvidia-caps/nvidia-cap{}"


class GpuLost(Exception):
    """The GPU answered NVML_ERROR_GPU_IS_LOST while its MIG devices were read."""


@dataclass(frozen=True)
class MigCaps:
    """Where the MIG capability files are: under each root in order (the driver root, then /)."""

    roots: tuple[Path, ...] = (Path("/"),)

    def node(self, relative: str) -> str | None:
        """`/dev/nvidia-caps/nvidia-cap<N>` for a capability file (`gpu0/mig/gi7/access`).

        None when no root has it readable."""
        for root in self.roots:
            try:
                text = (root / CAPS_DIR / relative).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "DeviceFileMinor" and value.strip().isdigit():
                    return CAPS_NODE.format(int(value))
            log.warning("%s: no DeviceFileMinor line", root / CAPS_DIR / relative)
            return None
        return None


def read_mig_devices(
    lib: NvmlLibrary, handle: Any, parent: Device, caps: MigCaps, dev: Path, missing: list[str]
) -> tuple[MigDevice, ...]:
    """The MIG devices of one MIG-enabled GPU, by MIG index. GpuLost when the GPU is lost.

    `dev`: where the /dev nodes are; caps nodes that are not there are added to
    `missing` (the one warning at discovery) and left out of the device's nodes.
    """
    try:
        slots = lib.nvmlDeviceGetMaxMigDeviceCount(handle)
    except lib.NVMLError as err:
        _raise_if_lost(err)
        log.warning("GPU %d: cannot count its MIG devices: %s", parent.index, err)
        return ()
    profiles = _ProfileTable(lib, handle, parent)
    found: list[MigDevice] = []
    for index in range(int(slots)):
        try:
            mig = lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except lib.NVMLError as err:
            _raise_if_lost(err)
            if error_code(err) != ERROR_NOT_FOUND:  # NOT_FOUND: an empty slot
                log.warning("GPU %d: cannot read MIG device %d: %s", parent.index, index, err)
            continue
        try:
            device = _mig_device(lib, handle, mig, index, parent, profiles, caps, dev, missing)
        except lib.NVMLError as err:
            _raise_if_lost(err)
            log.warning("GPU %d: MIG device %d left out: %s", parent.index, index, err)
            continue
        if device is not None:
            found.append(device)
    return tuple(found)


def _mig_device(
    lib: NvmlLibrary,
    handle: Any,
    mig: Any,
    index: int,
    parent: Device,
    profiles: _ProfileTable,
    caps: MigCaps,
    dev: Path,
    missing: list[str],
) -> MigDevice | None:
    uuid = nvml_text(lib.nvmlDeviceGetUUID(mig))
    gi = int(lib.nvmlDeviceGetGpuInstanceId(mig))
    ci = int(lib.nvmlDeviceGetComputeInstanceId(mig))
    profile_id = int(lib.nvmlGpuInstanceGetInfo(lib.nvmlDeviceGetGpuInstanceById(handle, gi)).profileId)
    ci_slices = int(lib.nvmlDeviceGetAttributes_v2(mig).computeInstanceSliceCount)
    profile = profiles.profile(profile_id, ci_slices)
    if profile is None:
        log.warning(
            "GPU %d: MIG device %d (%s) has GPU instance profile id %d, not in the GPU's list: left out",
            parent.index,
            index,
            uuid,
            profile_id,
        )
        return None
    nodes: list[str] = []
    if parent.minor is not None:
        for relative in (
            f"gpu{parent.minor}/mig/gi{gi}/access",
            f"gpu{parent.minor}/mig/gi{gi}/ci{ci}/access",
        ):
            node = caps.node(relative)
            if node is None:
                missing.append(f"the capability {relative} of MIG device {uuid}")
            elif (dev / node.removeprefix("/dev/")).exists():
                nodes.append(node)
            else:
                missing.append(str(dev / node.removeprefix("/dev/")))
    return MigDevice(
        id=uuid,
        uuid=uuid,
        parent_id=parent.id,
        index=index,
        profile=profile,
        gi_id=gi,
        ci_id=ci,
        device_nodes=tuple(nodes),
    )


class _ProfileTable:
    """The parent's GPU instance profiles by profile id, read once per GPU and only when needed."""

    def __init__(self, lib: NvmlLibrary, handle: Any, parent: Device) -> None:
        self._lib = lib
        self._handle = handle
        self._parent = parent
        self._by_id: dict[int, tuple[int, Any]] | None = None
        self._total: int | None = None

    def profile(self, profile_id: int, ci_slices: int) -> MigProfile | None:
        if self._by_id is None:
            self._by_id = self._read()
            self._total = int(self._lib.nvmlDeviceGetMemoryInfo(self._handle).total)
        entry = self._by_id.get(profile_id)
        if entry is None or not self._total:
            return None
        index, info = entry
        slices = int(info.sliceCount)
        memory_mib = int(info.memorySizeMB)
        name = profile_name(
            gi_slices=slices,
            ci_slices=ci_slices,
            memory=memory_gb(memory_mib, self._total),
            suffix=profile_suffix(index),
        )
        return MigProfile(
            name=name,
            gi_slices=slices,
            ci_slices=ci_slices,
            memory_mib=memory_mib,
            multiprocessors=int(info.multiprocessorCount),
            copy_engines=int(info.copyEngineCount),
            decoders=int(info.decoderCount),
            encoders=int(info.encoderCount),
            jpeg_engines=int(info.jpegCount),
            ofa_engines=int(info.ofaCount),
        )

    def _read(self) -> dict[int, tuple[int, Any]]:
        table: dict[int, tuple[int, Any]] = {}
        for index in range(PROFILE_COUNT):
            try:
                info = self._lib.nvmlDeviceGetGpuInstanceProfileInfo(self._handle, index)
            except self._lib.NVMLError as err:
                _raise_if_lost(err)
                continue  # a profile this GPU does not offer
            table[int(info.id)] = (index, info)
        return table


def _raise_if_lost(err: Exception) -> None:
    if error_code(err) == ERROR_GPU_IS_LOST:
        raise GpuLost(str(err)) from err


def mig_caps_roots(driver_root: Path) -> tuple[Path, ...]:
    """The driver root's capability files first, then the kernel's own."""
    return (driver_root, Path("/")) if driver_root != Path("/") else (Path("/"),)
