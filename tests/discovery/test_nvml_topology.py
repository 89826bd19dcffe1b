"""Reading topology through NVML, against the unit tests' fake NVML (testsupport/fake_nvml.py).

Per GPU the fake holds a list of NVLinks (remote bus id and device type, active
or not) and a CPU mask, and per pair of GPUs the common PCIe ancestor; faults are
injected per GPU and per call, and older bindings lack calls altogether.
"""

from __future__ import annotations

import itertools
import logging

import pytest

from gpu_device_plugin.allocator import preferred_allocation, topology_policy
from gpu_device_plugin.backends.fake.presets import DGX_1V_NVLINKS, preset_topology
from gpu_device_plugin.backends.nvml.discover import NvmlBackend
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.inventory import Inventory, Link, PciePath
from testsupport.fake_nvml import (
    ERROR_GPU_IS_LOST,
    TOPOLOGY_CALLS,
    TYPE_IBMNPU,
    TYPE_SWITCH,
    FakeGpu,
    FakeNvml,
    NvLink,
)


def bus(index: int) -> str:
    return f"00000000:{0x10 + index:02X}:00.0"  # NVML's spelling: 8-digit domain, upper case


def discover(nvml: FakeNvml) -> Inventory:
    return NvmlBackend(NvmlSession(nvml)).discover()  # type: ignore[arg-type]


def dgx_1v(**overrides: object) -> FakeNvml:
    """A DGX-1V as NVML would describe it, built from the same table as the preset."""
    preset = preset_topology("dgx-1v")
    gpus = [
        FakeGpu(
            uuid=f"GPU-{i}",
            bus_id=bus(i),
            numa_node=preset.numa[i],
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
    return FakeNvml(gpus=gpus, ancestors=ancestors, **overrides)  # type: ignore[arg-type]


def test_dgx_1v_reads_as_the_preset_describes_it() -> None:
    inventory = discover(dgx_1v())
    assert inventory.topology is not None
    preset = preset_topology("dgx-1v")
    for (a, b), expected in preset.links.items():
        assert inventory.topology.link(f"GPU-{a}", f"GPU-{b}") == expected, (a, b)
    assert inventory.topology.affinity("GPU-0") == "0-19,40-59"
    assert inventory.topology.affinity("GPU-7") == "20-39,60-79"


def nvswitch_box(links_per_gpu: int = 12, **overrides: object) -> FakeNvml:
    gpus = [
        FakeGpu(
            uuid=f"GPU-{i}",
            bus_id=bus(i),
            numa_node=i // 4,
            nvlinks=[NvLink(f"00000000:C{k % 6}:00.0", TYPE_SWITCH) for k in range(links_per_gpu)],
        )
        for i in range(8)
    ]
    ancestors = {
        frozenset((a, b)): 40 if a // 4 == b // 4 else 50 for a, b in itertools.combinations(range(8), 2)
    }
    return FakeNvml(gpus=gpus, ancestors=ancestors, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "missing",
    [frozenset(), frozenset({"nvmlDeviceGetNvLinkRemoteDeviceType"})],
    ids=["remote-type", "bus-id-only"],
)
def test_links_to_a_non_gpu_are_nvswitch(missing: frozenset[str]) -> None:
    inventory = discover(nvswitch_box(missing=missing))
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
    calls = ("nvmlDeviceGetNvLinkState", "nvmlDeviceGetTopologyCommonAncestor", "nvmlDeviceGetCpuAffinity")
    nvml.gpus[3].errors = dict.fromkeys(calls, ERROR_GPU_IS_LOST)
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
        inventory = discover(dgx_1v(missing=TOPOLOGY_CALLS))
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
