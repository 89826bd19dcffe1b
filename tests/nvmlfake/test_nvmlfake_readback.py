"""Every shipped profile, read back through the real pynvml, equals the profile.

The expected values come from the profile model (nvmlfake.profile), never from the
C code, so a wrong struct layout, a swapped field or a lost record fails here.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import pytest

from gdp_hack.nvmlfake import FakeDriver, shipped_names
from gdp_hack.nvmlfake.profile import Profile, RemoteType, cpu_words

MIB = 1024 * 1024
ALL = pytest.mark.parametrize("fake_driver", shipped_names(), indirect=True)


def _code(pynvml: ModuleType, call: Any, *args: Any) -> int | None:
    """The NVML return code of a call that is expected to fail (None if it succeeded)."""
    try:
        call(*args)
    except pynvml.NVMLError as err:
        return int(err.value)
    return None


def _plain(value: Any) -> Any:
    # pynvml 13 hands some answers back as ctypes values (nvmlDeviceIsMigDeviceHandle: c_uint).
    return getattr(value, "value", value)


def _address(handle: Any) -> int:
    value = ctypes.cast(handle, ctypes.c_void_p).value
    assert value is not None
    return value


@ALL
def test_system_and_devices_read_back_as_the_profile(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv, profile = fake_pynvml, fake_driver.profile
    assert nv.nvmlSystemGetDriverVersion() == profile.system.driver
    assert nv.nvmlSystemGetNVMLVersion() == profile.system.nvml
    assert nv.nvmlSystemGetCudaDriverVersion() == profile.system.cuda_int
    assert nv.nvmlDeviceGetCount() == len(profile.devices)
    addresses = set()
    for index, device in enumerate(profile.devices):
        h = nv.nvmlDeviceGetHandleByIndex(index)
        addresses.add(_address(h))
        # Handles are pointers into the library: stable per device, distinct between devices.
        assert _address(nv.nvmlDeviceGetHandleByIndex(index)) == _address(h)
        assert _address(nv.nvmlDeviceGetHandleByUUID(device.uuid)) == _address(h)
        assert _address(nv.nvmlDeviceGetHandleByPciBusId(device.pci_bus_id.upper())) == _address(h)
        assert _address(nv.nvmlDeviceGetHandleByPciBusId(device.pci_bus_id[4:])) == _address(h)
        assert nv.nvmlDeviceGetIndex(h) == index
        assert nv.nvmlDeviceGetUUID(h) == device.uuid
        assert nv.nvmlDeviceGetName(h) == device.name
        assert nv.nvmlDeviceGetMinorNumber(h) == device.minor
        memory = nv.nvmlDeviceGetMemoryInfo(h)
        assert memory.total == device.memory_mib * MIB
        assert memory.used + memory.free == memory.total
        memory2 = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
        assert (memory2.total, memory2.reserved) == (device.memory_mib * MIB, device.reserved_mib * MIB)
        pci = nv.nvmlDeviceGetPciInfo(h)
        assert pci.busId == device.pci_bus_id.upper()
        assert pci.busIdLegacy == device.pci_bus_id[4:].upper()
        assert (pci.domain, pci.bus, pci.device) == tuple(
            int(x, 16) for x in device.pci_bus_id.replace(".", ":").split(":")[:3]
        )
        assert (pci.pciDeviceId, pci.pciSubSystemId) == (device.pci_device_id, device.pci_subsystem_id)
        assert tuple(nv.nvmlDeviceGetCudaComputeCapability(h)) == device.cc
        if device.numa_node is None:
            assert _code(nv, nv.nvmlDeviceGetNumaNodeId, h) == nv.NVML_ERROR_NOT_SUPPORTED
        else:
            assert nv.nvmlDeviceGetNumaNodeId(h) == device.numa_node
        words = cpu_words(device.cpu_affinity)
        assert list(nv.nvmlDeviceGetCpuAffinity(h, 64)) == words + [0] * (64 - len(words))
        assert nv.nvmlDeviceGetSupportedEventTypes(h) == device.event_mask
        if device.mig_capable:
            pending = device.mig.current if device.mig.pending is None else device.mig.pending
            assert list(nv.nvmlDeviceGetMigMode(h)) == [int(device.mig.current), int(pending)]
            assert nv.nvmlDeviceGetMaxMigDeviceCount(h) == device.mig.max_devices
        else:
            assert _code(nv, nv.nvmlDeviceGetMigMode, h) == nv.NVML_ERROR_NOT_SUPPORTED
            assert _code(nv, nv.nvmlDeviceGetMaxMigDeviceCount, h) == nv.NVML_ERROR_NOT_SUPPORTED
    assert len(addresses) == len(profile.devices)
    assert _code(nv, nv.nvmlDeviceGetHandleByIndex, len(profile.devices)) == nv.NVML_ERROR_INVALID_ARGUMENT
    assert _code(nv, nv.nvmlDeviceGetHandleByUUID, "GPU-nope") == nv.NVML_ERROR_NOT_FOUND
    assert _code(nv, nv.nvmlDeviceGetHandleByPciBusId, "0000:ff:1f.7") == nv.NVML_ERROR_NOT_FOUND


@ALL
def test_topology_reads_back_as_the_profile(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv, profile = fake_pynvml, fake_driver.profile
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(len(profile.devices))]
    for a, ha in enumerate(handles):
        for b, hb in enumerate(handles):
            assert nv.nvmlDeviceGetTopologyCommonAncestor(ha, hb) == int(profile.level(a, b)), (a, b)
    for index, (device, links) in enumerate(zip(profile.devices, profile.links(), strict=True)):
        h = handles[index]
        if device.nvlinks == 0:
            assert _code(nv, nv.nvmlDeviceGetNvLinkState, h, 0) == nv.NVML_ERROR_NOT_SUPPORTED
            continue
        for n in range(device.nvlinks):
            active = n < len(links)
            assert nv.nvmlDeviceGetNvLinkState(h, n) == int(active), (index, n)
            assert nv.nvmlDeviceGetNvLinkCapability(h, n, nv.NVML_NVLINK_CAP_P2P_SUPPORTED) == int(active)
            if not active:
                assert _code(nv, nv.nvmlDeviceGetNvLinkRemotePciInfo, h, n) == nv.NVML_ERROR_NOT_SUPPORTED
                continue
            remote = nv.nvmlDeviceGetNvLinkRemotePciInfo(h, n)
            assert remote.busId == links[n].remote_bus_id.upper()
            assert remote.pciDeviceId == links[n].remote_pci_device_id
            assert nv.nvmlDeviceGetNvLinkRemoteDeviceType(h, n) == int(links[n].remote_type)
        assert _code(nv, nv.nvmlDeviceGetNvLinkState, h, device.nvlinks) == nv.NVML_ERROR_INVALID_ARGUMENT


def _direct_counts(profile: Profile) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for index, links in enumerate(profile.links()):
        for link in links:
            if link.remote_type == RemoteType.gpu and link.remote_gpu is not None:
                pair = (min(index, link.remote_gpu), max(index, link.remote_gpu))
                counts[pair] = counts.get(pair, 0) + 1
    return {pair: n // 2 for pair, n in counts.items()}  # each link is seen from both ends


@pytest.mark.parametrize("fake_driver", ["dgx1-v100"], indirect=True)
def test_the_cube_mesh_has_the_dgx1v_link_pattern(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    # nvidia-smi topo -m on a DGX-1V: NV2 / NV1 / none, 6 links per GPU.
    nv2 = {(0, 3), (0, 4), (1, 2), (1, 5), (2, 3), (4, 7), (5, 6), (6, 7)}
    nv1 = {(0, 1), (0, 2), (1, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7)}
    counts = _direct_counts(fake_driver.profile)
    assert {p for p, n in counts.items() if n == 2} == nv2
    assert {p for p, n in counts.items() if n == 1} == nv1
    # And as pynvml sees it: remote bus ids per link, counted per pair.
    nv = fake_pynvml
    bus = {nv.nvmlDeviceGetPciInfo(nv.nvmlDeviceGetHandleByIndex(i)).busId: i for i in range(8)}
    seen: dict[tuple[int, int], int] = {}
    for i in range(8):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        for n in range(6):
            j = bus[nv.nvmlDeviceGetNvLinkRemotePciInfo(h, n).busId]
            seen[(i, j)] = seen.get((i, j), 0) + 1
    assert {(a, b) for (a, b), n in seen.items() if n == 2 and a < b} == nv2
    assert {(a, b) for (a, b), n in seen.items() if n == 1 and a < b} == nv1


@ALL
def test_mig_devices_read_back_as_the_profile(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv, profile = fake_pynvml, fake_driver.profile
    for index, device in enumerate(profile.devices):
        h = nv.nvmlDeviceGetHandleByIndex(index)
        assert _plain(nv.nvmlDeviceIsMigDeviceHandle(h)) == 0
        assert _code(nv, nv.nvmlDeviceGetGpuInstanceId, h) == nv.NVML_ERROR_NOT_SUPPORTED
        if not device.mig.current:
            if device.mig_capable:
                assert _code(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, h, 0) == nv.NVML_ERROR_NOT_FOUND
                assert _code(nv, nv.nvmlDeviceGetGpuInstanceProfileInfo, h, 0) == nv.NVML_ERROR_NOT_SUPPORTED
            continue
        for m, inst in enumerate(device.mig.instances):
            gi_profile = profile.profile_named(inst.profile)
            mh = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, m)
            uuid = profile.mig_uuid(index, inst)
            assert uuid.startswith("MIG-")
            assert nv.nvmlDeviceGetUUID(mh) == uuid
            assert _address(nv.nvmlDeviceGetHandleByUUID(uuid)) == _address(mh)
            assert nv.nvmlDeviceGetName(mh) == f"{device.name} MIG {inst.profile}"
            assert _plain(nv.nvmlDeviceIsMigDeviceHandle(mh)) == 1
            assert nv.nvmlDeviceGetGpuInstanceId(mh) == inst.gi
            assert nv.nvmlDeviceGetComputeInstanceId(mh) == inst.ci
            assert nv.nvmlDeviceGetMemoryInfo(mh).total == gi_profile.memory_mib * MIB
            assert _address(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mh)) == _address(h)
            assert (
                _code(nv, nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, h)
                == nv.NVML_ERROR_INVALID_ARGUMENT
            )
        left = len(device.mig.instances)
        if left < device.mig.max_devices:
            assert _code(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, h, left) == nv.NVML_ERROR_NOT_FOUND
        assert (
            _code(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, h, device.mig.max_devices)
            == nv.NVML_ERROR_INVALID_ARGUMENT
        )
        for p in profile.mig_profiles:
            info = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, p.profile)
            got = (info.id, info.name.decode() if isinstance(info.name, bytes) else info.name)
            assert got == (p.id, p.name)
            assert (info.sliceCount, info.instanceCount, info.multiprocessorCount) == (
                p.slices,
                p.instances,
                p.multiprocessors,
            )
            assert (info.memorySizeMB, info.copyEngineCount, info.decoderCount) == (
                p.memory_mib,
                p.copy_engines,
                p.decoders,
            )
            assert (info.encoderCount, info.jpegCount, info.ofaCount) == (p.encoders, p.jpeg, p.ofa)
            v1 = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, p.profile, version=1)
            assert (v1.id, v1.sliceCount, v1.memorySizeMB) == (p.id, p.slices, p.memory_mib)


@pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)
def test_the_mig_profile_has_what_the_issue_asks(fake_driver: FakeDriver) -> None:
    devices = fake_driver.profile.devices
    assert [i.profile for i in devices[0].mig.instances] == ["1g.10gb"] * 7
    assert sorted(i.profile for i in devices[1].mig.instances) == ["1g.10gb", "2g.20gb", "3g.40gb"]
    assert devices[2].mig_capable
    assert not devices[2].mig.current
