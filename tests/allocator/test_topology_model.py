"""The topology model the policy reads: immutable, canonical, unknown when missing."""

from __future__ import annotations

import dataclasses

import pytest

from gpu_device_plugin.inventory import Device, Health, Inventory, Link, PciePath, Topology
from gpu_device_plugin.inventory.topology import cpu_list

NV2 = Link(nvlinks=2, pcie=PciePath.SINGLE_SWITCH)
SYS = Link(pcie=PciePath.SYSTEM)


def test_pairs_in_any_order_and_orientation_make_one_topology() -> None:
    one = Topology.of({("b", "a"): NV2, ("a", "c"): SYS})
    other = Topology.of([("c", "a", SYS), ("a", "b", NV2)])
    assert one == other
    assert hash(one) == hash(other)
    assert one.link("a", "b") is NV2
    assert one.link("b", "a") is NV2
    assert len(one.links) == 2
    assert Topology(links=(("b", "a", NV2), ("a", "c", SYS))) == one, "canonical however built"


def test_a_missing_pair_is_unknown_not_an_error() -> None:
    topology = Topology.of({("a", "b"): NV2})
    assert topology.link("a", "c") is None
    assert topology.link("x", "y") is None
    assert topology.affinity("a") is None


@pytest.mark.parametrize(
    ("links", "message"),
    [
        pytest.param([("a", "a", NV2)], "two GPUs", id="self-link"),
        pytest.param([("a", "b", NV2), ("b", "a", SYS)], "given twice", id="pair-twice"),
    ],
)
def test_malformed_topologies_are_refused(links: list[tuple[str, str, Link]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topology.of(links)


def test_topology_and_links_are_immutable() -> None:
    topology = Topology.of({("a", "b"): NV2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.links = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        NV2.nvlinks = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative"):
        Link(nvlinks=-1)


@pytest.mark.parametrize(
    ("link", "label"),
    [
        pytest.param(Link(nvlinks=12, nvswitch=True, pcie=PciePath.SYSTEM), "NV12", id="nvlink-wins"),
        pytest.param(Link(pcie=PciePath.SAME_BOARD), "PIX", id="same-board-as-nvidia-smi"),
        pytest.param(Link(pcie=PciePath.MULTIPLE_SWITCHES), "PXB", id="pxb"),
        pytest.param(Link(pcie=PciePath.HOST_BRIDGE), "PHB", id="phb"),
        pytest.param(Link(pcie=PciePath.NUMA_NODE), "NODE", id="node"),
        pytest.param(Link(nvlinks=None), "?", id="unknown"),
    ],
)
def test_labels_are_nvidia_smi_s(link: Link, label: str) -> None:
    assert link.label == label


def test_pcie_paths_are_nvml_levels_and_config_keys_round_trip() -> None:
    assert [p.value for p in PciePath] == [0, 10, 20, 30, 40, 50]
    for path in PciePath:
        assert PciePath.from_key(path.key) is path


def test_cpu_list_renders_runs() -> None:
    assert cpu_list([0, 1, 2, 3, 40, 41, 7]) == "0-3,7,40-41"
    assert cpu_list([]) == ""
    assert cpu_list([5]) == "5"


def test_inventory_carries_topology_through_health_changes() -> None:
    devices = (Device(id="a", index=0, uuid="a"), Device(id="b", index=1, uuid="b"))
    topology = Topology.of({("a", "b"): NV2})
    inventory = Inventory(devices=devices, backend="test", topology=topology)
    sick = inventory.with_health({"a": (Health.UNHEALTHY, "xid 79")})
    assert sick.topology is topology
    assert inventory != Inventory(devices=devices, backend="test"), "a topology change is a change"
    assert Inventory(devices=devices, backend="test").topology is None
