"""Reading topology through NVML, against a small fake NVML of our own.

The fake implements our seam (`NvmlLibrary`), topology calls included, with
ctypes-pointer handles as pynvml's (testsupport/nvml_handles.py): per GPU
a list of NVLinks (remote bus id and device type, active or not), a table of
common PCIe ancestors, and CPU masks. Faults are injected per GPU and per call.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from gpu_device_plugin.allocator import preferred_allocation, topology_policy
from gpu_device_plugin.discovery.nvml import NvmlBackend, NvmlSession
from gpu_device_plugin.discovery.presets import DGX_1V_NVLINKS, preset_topology
from gpu_device_plugin.inventory import Inventory, Link, PciePath
from testsupport.nvml_handles import DeviceHandles

INVALID_ARGUMENT, NOT_SUPPORTED, GPU_IS_LOST = 2, 3, 15
TYPE_GPU, TYPE_IBMNPU, TYPE_SWITCH = 0, 1, 2


TOPOLOGY_CALLS = frozenset(
    {
        "nvmlDeviceGetTopologyCommonAncestor",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkRemotePciInfo",
        "nvmlDeviceGetNvLinkRemoteDeviceType",
        "nvmlDeviceGetCpuAffinity",
    }
)


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class NvLink:
    remote_bus: str
    remote_type: int = TYPE_GPU
    active: bool = True


@dataclass
class Gpu:
    uuid: str
    bus_id: str
    numa: int = 0
    nvlinks: list[NvLink] | None = None  # None: no NVLink at all (NOT_SUPPORTED)
    cpus: tuple[int, ...] = ()
    lost: frozenset[str] = frozenset()  # calls that fail with GPU_IS_LOST for this GPU


@dataclass
class TopologyNvml:
    gpus: list[Gpu]
    # NVML topology level per pair of GPU indexes.
    ancestors: dict[frozenset[int], int] = field(default_factory=dict)
    has_remote_type: bool = True  # older drivers lack nvmlDeviceGetNvLinkRemoteDeviceType
    has_topology_calls: bool = True  # older bindings lack every topology call

    NVMLError = NVMLError
    NVML_NVLINK_MAX_LINKS = 18

    def __post_init__(self) -> None:
        self.handles = DeviceHandles(len(self.gpus))

    def _i(self, handle: object) -> int:
        return self.handles.index(handle)

    def __getattribute__(self, name: str) -> object:
        # Old bindings: the topology calls are not there at all.
        if name in TOPOLOGY_CALLS and not object.__getattribute__(self, "has_topology_calls"):
            raise AttributeError(f"module 'pynvml' has no attribute '{name}'")
        return object.__getattribute__(self, name)

    # -- what discovery needs besides topology
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return self.handles.handle(index)

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return self.gpus[self._i(handle)].uuid

    def nvmlDeviceGetName(self, handle: object) -> str:
        return "Tesla V100-SXM2-32GB"

    def nvmlDeviceGetMinorNumber(self, handle: object) -> int:
        return self._i(handle)

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(total=32 << 30)

    def nvmlDeviceGetPciInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(busId=self.gpus[self._i(handle)].bus_id.encode())

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        return (7, 0)

    def nvmlDeviceGetNumaNodeId(self, handle: object) -> int:
        return self.gpus[self._i(handle)].numa

    # -- topology
    def _gpu(self, handle: object, call: str) -> Gpu:
        gpu = self.gpus[self._i(handle)]
        if call in gpu.lost:
            raise NVMLError(GPU_IS_LOST)
        return gpu

    def _link(self, handle: object, link: int, call: str) -> NvLink:
        links = self._gpu(handle, call).nvlinks
        if links is None:
            raise NVMLError(NOT_SUPPORTED)
        if link >= len(links):
            raise NVMLError(INVALID_ARGUMENT)
        return links[link]

    def nvmlDeviceGetTopologyCommonAncestor(self, device1: object, device2: object) -> int:
        self._gpu(device1, "nvmlDeviceGetTopologyCommonAncestor")
        self._gpu(device2, "nvmlDeviceGetTopologyCommonAncestor")
        return self.ancestors[frozenset((self._i(device1), self._i(device2)))]

    def nvmlDeviceGetNvLinkState(self, device: object, link: int) -> int:
        return int(self._link(device, link, "nvmlDeviceGetNvLinkState").active)

    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: object, link: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._link(device, link, "nvmlDeviceGetNvLinkRemotePciInfo").remote_bus)

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: object, link: int) -> int:
        if not self.has_remote_type:
            raise AttributeError("nvmlDeviceGetNvLinkRemoteDeviceType")
        return self._link(handle, link, "nvmlDeviceGetNvLinkRemoteDeviceType").remote_type

    def nvmlDeviceGetCpuAffinity(self, handle: object, cpuSetSize: int) -> ctypes.Array[ctypes.c_ulonglong]:
        # pynvml answers a ctypes array of 64-bit words, not a list.
        words = (ctypes.c_ulonglong * cpuSetSize)()
        for cpu in self._gpu(handle, "nvmlDeviceGetCpuAffinity").cpus:
            words[cpu // 64] |= 1 << (cpu % 64)
        return words


def bus(index: int) -> str:
    return f"00000000:{0x10 + index:02X}:00.0"  # NVML's spelling: 8-digit domain, upper case


def discover(nvml: TopologyNvml) -> Inventory:
    return NvmlBackend(NvmlSession(nvml)).discover()  # type: ignore[arg-type]


def dgx_1v(**overrides: object) -> TopologyNvml:
    """A DGX-1V as NVML would describe it, built from the same table as the preset."""
    preset = preset_topology("dgx-1v")
    gpus = [
        Gpu(
            uuid=f"GPU-{i}",
            bus_id=bus(i),
            numa=preset.numa[i],
            nvlinks=[],
            cpus=tuple(range(0, 20)) + tuple(range(40, 60))
            if i < 4
            else tuple(range(20, 40)) + tuple(range(60, 80)),
        )
        for i in range(8)
    ]
    for (a, b), count in DGX_1V_NVLINKS.items():
        for _ in range(count):
            gpus[a].nvlinks.append(NvLink(bus(b)))  # type: ignore[union-attr]
            gpus[b].nvlinks.append(NvLink(bus(a)))  # type: ignore[union-attr]
    gpus[0].nvlinks.append(NvLink(bus(4), active=False))  # type: ignore[union-attr]  # a dead link: ignored
    ancestors = {frozenset(pair): int(link.pcie or 0) for pair, link in preset.links.items()}
    return TopologyNvml(gpus=gpus, ancestors=ancestors, **overrides)  # type: ignore[arg-type]


def test_dgx_1v_reads_as_the_preset_describes_it() -> None:
    inventory = discover(dgx_1v())
    assert inventory.topology is not None
    preset = preset_topology("dgx-1v")
    for (a, b), expected in preset.links.items():
        assert inventory.topology.link(f"GPU-{a}", f"GPU-{b}") == expected, (a, b)
    assert inventory.topology.affinity("GPU-0") == "0-19,40-59"
    assert inventory.topology.affinity("GPU-7") == "20-39,60-79"


def nvswitch_box(links_per_gpu: int = 12, **overrides: object) -> TopologyNvml:
    gpus = [
        Gpu(
            uuid=f"GPU-{i}",
            bus_id=bus(i),
            numa=i // 4,
            nvlinks=[NvLink(f"00000000:C{k % 6}:00.0", TYPE_SWITCH) for k in range(links_per_gpu)],
        )
        for i in range(8)
    ]
    ancestors = {
        frozenset((a, b)): 40 if a // 4 == b // 4 else 50 for a, b in itertools.combinations(range(8), 2)
    }
    return TopologyNvml(gpus=gpus, ancestors=ancestors, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("has_remote_type", [True, False], ids=["remote-type", "bus-id-only"])
def test_links_to_a_non_gpu_are_nvswitch(has_remote_type: bool) -> None:
    inventory = discover(nvswitch_box(has_remote_type=has_remote_type))
    assert inventory.topology is not None
    assert inventory.topology.link("GPU-0", "GPU-7") == Link(nvlinks=12, nvswitch=True, pcie=PciePath.SYSTEM)
    assert inventory.topology.link("GPU-1", "GPU-2") == Link(
        nvlinks=12, nvswitch=True, pcie=PciePath.NUMA_NODE
    )


def test_links_to_an_ibm_cpu_are_not_gpu_pairs() -> None:
    nvml = nvswitch_box()
    for gpu in nvml.gpus:
        gpu.nvlinks = [NvLink("00000000:04:00.0", TYPE_IBMNPU)] * 2
    nvml.gpus[0].nvlinks = [*nvml.gpus[0].nvlinks, NvLink(bus(1))]
    nvml.gpus[1].nvlinks = [*nvml.gpus[1].nvlinks, NvLink(bus(0))]
    topology = discover(nvml).topology
    assert topology is not None
    assert topology.link("GPU-0", "GPU-1") == Link(nvlinks=1, pcie=PciePath.NUMA_NODE)
    assert topology.link("GPU-2", "GPU-3") == Link(nvlinks=0, pcie=PciePath.NUMA_NODE)


def test_gpus_without_nvlink_have_pcie_only() -> None:
    nvml = nvswitch_box()
    for gpu in nvml.gpus:
        gpu.nvlinks = None
    topology = discover(nvml).topology
    assert topology is not None
    assert topology.link("GPU-0", "GPU-1") == Link(nvlinks=0, pcie=PciePath.NUMA_NODE)


def test_a_lost_gpu_leaves_only_its_pairs_unknown(caplog: pytest.LogCaptureFixture) -> None:
    nvml = dgx_1v()
    nvml.gpus[3].lost = frozenset(
        {"nvmlDeviceGetNvLinkState", "nvmlDeviceGetTopologyCommonAncestor", "nvmlDeviceGetCpuAffinity"}
    )
    with caplog.at_level(logging.INFO):
        inventory = discover(nvml)
    topology = inventory.topology
    assert topology is not None
    assert len(inventory.devices) == 8, "discovery itself does not fail"
    # 3-7 is a direct NV1 link: GPU 7 still sees it. 3-4 has no direct link and 3
    # cannot say whether it hangs off a switch: nothing known, so the pair is left out.
    assert topology.link("GPU-3", "GPU-7") == Link(nvlinks=1, pcie=None)
    assert topology.link("GPU-3", "GPU-4") is None
    assert topology.link("GPU-0", "GPU-1") == Link(nvlinks=1, pcie=PciePath.SINGLE_SWITCH), "others intact"
    assert topology.affinity("GPU-3") is None
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "GPU 3: NVLinks unknown" in messages
    assert "PCIe relationship unknown for GPU pairs 0-3, 1-3, 2-3, 3-4" in messages
    # And the policy still answers for the whole node.
    everything = [d.id for d in inventory.devices]
    for size in range(1, 9):
        assert len(preferred_allocation(inventory, everything, [], size, topology_policy)) == size


def test_old_bindings_without_topology_calls_give_no_topology(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        inventory = discover(dgx_1v(has_topology_calls=False))
    assert inventory.topology is None
    assert len(inventory.devices) == 8
    assert [d.numa_node for d in inventory.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [r.levelname for r in caplog.records if "topology" in r.getMessage()] == ["INFO"], "said once"


def test_an_unknown_topology_level_is_unknown_not_a_crash() -> None:
    nvml = nvswitch_box()
    nvml.ancestors[frozenset((0, 1))] = 35
    topology = discover(nvml).topology
    assert topology is not None
    assert topology.link("GPU-0", "GPU-1") == Link(nvlinks=12, nvswitch=True, pcie=None)
