"""Reading the GPU topology through NVML: PCIe ancestry, NVLinks, CPU affinity.

Called by the NVML backend after it has found the devices. Nothing here may
make discovery fail: a GPU whose topology cannot be read (it fell off the bus,
the driver refuses, the bindings are too old) only leaves its pairs unknown,
and the reason is logged once per GPU, not once per call.

NVLink: each GPU reports, per link, whether it is active and which PCI device
is at the other end. Another GPU's bus id there is a direct link to that GPU;
an NVSwitch (or anything else that is not a GPU nor an IBM CPU) means the GPU
reaches every other switch-attached GPU through the fabric, as on DGX A100/H100.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpu_device_plugin.backends.nvml.library import (
    ERROR_INVALID_ARGUMENT,
    ERROR_NOT_SUPPORTED,
    error_code,
    nvml_text,
)
from gpu_device_plugin.inventory import Device, Link, PciePath, Topology
from gpu_device_plugin.inventory.topology import cpu_list

if TYPE_CHECKING:
    from gpu_device_plugin.backends.nvml.library import NvmlLibrary

log = logging.getLogger(__name__)

# NVML return codes that mean "this link does not exist here", not a failure.
_NVML_FEATURE_ENABLED = 1
_NVLINK_DEVICE_TYPE_GPU = 0
_NVLINK_DEVICE_TYPE_IBMNPU = 1
# Used when the bindings do not say how many links a GPU can have.
_DEFAULT_MAX_NVLINKS = 18
# 64-bit words of CPU mask asked for: room for 4096 CPUs.
_CPU_SET_WORDS = 64
# Without these there is no topology to read (CPU affinity and the remote
# device type are optional extras, read when present).
_REQUIRED_CALLS = (
    "nvmlDeviceGetTopologyCommonAncestor",
    "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkRemotePciInfo",
)


class _Unreadable(Exception):
    """One GPU's part of the topology could not be read; the message says why."""


@dataclass(frozen=True)
class _NvlinkEnds:
    """What one GPU's active NVLinks reach: GPUs by bus id, and how many go to a switch."""

    gpus: Counter[str]
    switch_links: int


def read_topology(lib: NvmlLibrary, devices: Sequence[Device]) -> Topology | None:
    """The topology of `devices` (as the backend found them), or None when nothing is known."""
    missing = [call for call in _REQUIRED_CALLS if not hasattr(lib, call)]
    if missing:
        # A fact about the bindings, not a fault of any GPU: say it once.
        log.info("GPU topology unknown: the NVML bindings lack %s", ", ".join(missing))
        return None
    handles: dict[str, Any] = {}
    for device in devices:
        try:
            handles[device.uuid] = lib.nvmlDeviceGetHandleByIndex(device.index)
        except lib.NVMLError as err:
            log.warning("GPU %d: no handle for reading topology: %s", device.index, err)
    known = [d for d in devices if d.uuid in handles]
    bus_ids = {_norm(d.pci_bus_id): d.uuid for d in known if d.pci_bus_id}
    max_links = int(getattr(lib, "NVML_NVLINK_MAX_LINKS", _DEFAULT_MAX_NVLINKS))

    ends: dict[str, _NvlinkEnds | None] = {}
    affinity: dict[str, str] = {}
    for device in known:
        handle = handles[device.uuid]
        try:
            ends[device.uuid] = _classify(_read_nvlinks(lib, handle, max_links), bus_ids)
        except _Unreadable as err:
            log.warning("GPU %d: NVLinks unknown (%s); its NVLink pairs are unknown", device.index, err)
            ends[device.uuid] = None
        try:
            cpus = _read_cpu_affinity(lib, handle)
        except _Unreadable as err:
            log.info("GPU %d: CPU affinity unknown: %s", device.index, err)
        else:
            if cpus:
                affinity[device.uuid] = cpus

    links: dict[tuple[str, str], Link] = {}
    failed: list[str] = []
    first_error: str | None = None
    for i, a in enumerate(known):
        for b in known[i + 1 :]:
            try:
                pcie = _read_common_ancestor(lib, handles[a.uuid], handles[b.uuid])
            except _Unreadable as err:
                pcie = None
                failed.append(f"{a.index}-{b.index}")
                first_error = first_error or str(err)
            nvlinks, nvswitch = _pair_nvlinks(a, b, ends[a.uuid], ends[b.uuid], bus_ids)
            if pcie is None and nvlinks is None:
                continue  # nothing known: leave the pair out
            links[(a.uuid, b.uuid)] = Link(nvlinks=nvlinks, nvswitch=nvswitch, pcie=pcie)
    if failed:
        log.warning("PCIe relationship unknown for GPU pairs %s: %s", ", ".join(failed), first_error)
    if not links and not affinity:
        return None
    return Topology.of(links, affinity)


def _pair_nvlinks(
    a: Device,
    b: Device,
    ends_a: _NvlinkEnds | None,
    ends_b: _NvlinkEnds | None,
    bus_ids: dict[str, str],
) -> tuple[int | None, bool]:
    """(NVLinks between a and b, through NVSwitch?); None links when that cannot be told."""
    # A direct link shows at both ends, so one readable end is enough to count it.
    direct = max(
        (_direct_to(ends, other, bus_ids) for ends, other in ((ends_a, b), (ends_b, a)) if ends is not None),
        default=None,
    )
    if ends_a is None or ends_b is None:
        # The unreadable GPU might hang off an NVSwitch: only a direct link is certain.
        return (direct or None), False
    switched = min(ends_a.switch_links, ends_b.switch_links)
    return (direct or 0) + switched, switched > 0


def _direct_to(ends: _NvlinkEnds, other: Device, bus_ids: dict[str, str]) -> int:
    return sum(n for bus, n in ends.gpus.items() if bus_ids.get(bus) == other.uuid)


def _read_nvlinks(lib: NvmlLibrary, handle: Any, max_links: int) -> list[tuple[str, int | None]]:
    """(remote bus id, remote device type or None) of each active NVLink of one GPU."""
    remotes: list[tuple[str, int | None]] = []
    for link in range(max_links):
        try:
            if lib.nvmlDeviceGetNvLinkState(handle, link) != _NVML_FEATURE_ENABLED:
                continue
            remote = _norm(nvml_text(lib.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId))
        except lib.NVMLError as err:
            if error_code(err) in (ERROR_NOT_SUPPORTED, ERROR_INVALID_ARGUMENT):
                continue  # no such link on this GPU (or no NVLink at all)
            raise _Unreadable(f"link {link}: {err}") from err
        except AttributeError as err:  # bindings without NVLink calls
            raise _Unreadable(f"the NVML bindings lack NVLink calls ({err})") from err
        # Newer drivers also say what the far end is; older ones leave us the bus id.
        kind = _remote_type(lib, handle, link)
        remotes.append((remote, kind))
    return remotes


def _classify(remotes: list[tuple[str, int | None]], gpu_buses: Iterable[str]) -> _NvlinkEnds:
    """Links to known GPUs by bus id; the rest that reach a switch (or an unnamed device) counted."""
    known = set(gpu_buses)
    gpus: Counter[str] = Counter()
    switch_links = 0
    for bus, kind in remotes:
        if bus in known:
            gpus[bus] += 1
        elif kind in (_NVLINK_DEVICE_TYPE_GPU, _NVLINK_DEVICE_TYPE_IBMNPU):
            continue  # a GPU we do not serve, or an IBM POWER CPU: no pair of ours
        else:
            switch_links += 1
    return _NvlinkEnds(gpus=gpus, switch_links=switch_links)


def _read_common_ancestor(lib: NvmlLibrary, h1: Any, h2: Any) -> PciePath:
    try:
        level = lib.nvmlDeviceGetTopologyCommonAncestor(h1, h2)
    except lib.NVMLError as err:
        raise _Unreadable(str(err)) from err
    except AttributeError as err:
        raise _Unreadable(f"the NVML bindings lack nvmlDeviceGetTopologyCommonAncestor ({err})") from err
    try:
        return PciePath(int(level))
    except ValueError as err:
        raise _Unreadable(f"NVML answered an unknown topology level {level!r}") from err


def _read_cpu_affinity(lib: NvmlLibrary, handle: Any) -> str:
    try:
        words = lib.nvmlDeviceGetCpuAffinity(handle, _CPU_SET_WORDS)
    except lib.NVMLError as err:
        raise _Unreadable(str(err)) from err
    except AttributeError as err:
        raise _Unreadable(f"the NVML bindings lack nvmlDeviceGetCpuAffinity ({err})") from err
    return cpu_list(_bits(words))


def _bits(words: Iterable[int]) -> Iterable[int]:
    for w, word in enumerate(words):
        value = int(word)
        bit = 0
        while value:
            if value & 1:
                yield w * 64 + bit
            value >>= 1
            bit += 1


def _remote_type(lib: NvmlLibrary, handle: Any, link: int) -> int | None:
    try:
        return int(lib.nvmlDeviceGetNvLinkRemoteDeviceType(handle, link))
    except (lib.NVMLError, AttributeError):
        return None


def _norm(bus_id: str) -> str:
    """One spelling for PCI bus ids: lower case, 4-digit domain ("0000:17:00.0")."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{domain[-4:]}:{rest}" if rest else domain
