"""The fake backend's `topology:` section: presets, explicit pairs, and errors naming the field."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from gpu_device_plugin.backends.fake.discover import FakeBackend
from gpu_device_plugin.backends.fake.presets import (
    DGX_1V_NVLINKS,
    PRESET_NAMES,
    PRESETS,
    preset_sizes,
    preset_topology,
)
from gpu_device_plugin.backends.fake.spec import fake_uuid, parse_fake_config, to_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory, Link, PciePath


def inventory_of(config: dict[str, object]) -> Inventory:
    return to_inventory(parse_fake_config(yaml.safe_dump(config), source="test.yaml"))


def link(inventory: Inventory, a: int, b: int) -> Link | None:
    assert inventory.topology is not None
    return inventory.topology.link(fake_uuid(a), fake_uuid(b))


def test_preset_names_and_table_agree() -> None:
    assert set(PRESET_NAMES) == set(PRESETS)


@pytest.mark.parametrize(
    ("preset", "count"), [(name, size) for name in PRESET_NAMES for size in preset_sizes(name)]
)
def test_every_preset_describes_every_pair(preset: str, count: int) -> None:
    inventory = inventory_of({"count": count, "topology": {"preset": preset}})
    assert inventory.topology is not None
    assert len(inventory.topology.links) == count * (count - 1) // 2
    for a, b in itertools.combinations(range(count), 2):
        pair = link(inventory, a, b)
        assert pair is not None
        assert pair.pcie is not None
        # Across NUMA nodes is SYS, within one it never is.
        numa_a, numa_b = inventory.devices[a].numa_node, inventory.devices[b].numa_node
        assert (pair.pcie is PciePath.SYSTEM) == (numa_a != numa_b)
    # Two NUMA nodes, half the GPUs each, with their CPUs.
    assert [d.numa_node for d in inventory.devices] == [i * 2 // count for i in range(count)]
    cpus = {inventory.topology.affinity(d.uuid) for d in inventory.devices}
    assert len(cpus) == 2
    assert None not in cpus


def test_dgx_1v_is_the_hybrid_cube_mesh() -> None:
    inventory = inventory_of({"count": 8, "topology": {"preset": "dgx-1v"}})
    per_gpu = [
        sum((link(inventory, g, o) or Link()).nvlinks or 0 for o in range(8) if o != g) for g in range(8)
    ]
    assert per_gpu == [6] * 8, "every V100 has six NVLinks"
    doubled = sorted(pair for pair, n in DGX_1V_NVLINKS.items() if n == 2)
    assert doubled == [(0, 3), (0, 4), (1, 2), (1, 5), (2, 3), (4, 7), (5, 6), (6, 7)]
    assert link(inventory, 0, 1) == Link(nvlinks=1, pcie=PciePath.SINGLE_SWITCH)
    assert link(inventory, 0, 5) == Link(nvlinks=0, pcie=PciePath.SYSTEM)
    # Both quads are fully linked: every pair inside has NVLink.
    for quad in ((0, 1, 2, 3), (4, 5, 6, 7)):
        assert all((link(inventory, a, b) or Link()).nvlinks for a, b in itertools.combinations(quad, 2))


@pytest.mark.parametrize(("preset", "nvlinks"), [("dgx-a100", 12), ("dgx-h100", 18), ("dgx-2", 6)])
def test_nvswitch_presets_link_every_pair_equally(preset: str, nvlinks: int) -> None:
    topology = preset_topology(preset)
    assert {(lk.nvlinks, lk.nvswitch) for lk in topology.links.values()} == {(nvlinks, True)}


def test_pcie_2numa_has_two_switches_per_numa_node() -> None:
    inventory = inventory_of({"count": 8, "topology": {"preset": "pcie-2numa"}})
    assert link(inventory, 0, 1) == Link(pcie=PciePath.SINGLE_SWITCH)
    assert link(inventory, 0, 2) == Link(pcie=PciePath.NUMA_NODE)
    assert link(inventory, 3, 4) == Link(pcie=PciePath.SYSTEM)


def test_explicit_links_replace_preset_pairs() -> None:
    inventory = inventory_of(
        {
            "count": 8,
            "topology": {"preset": "dgx-1v", "links": [{"a": 5, "b": 0, "nvlinks": 1, "pcie": "SYS"}]},
        }
    )
    assert link(inventory, 0, 5) == Link(nvlinks=1, pcie=PciePath.SYSTEM)
    assert link(inventory, 0, 3) == Link(nvlinks=2, pcie=PciePath.HOST_BRIDGE)


def test_explicit_links_alone_leave_other_pairs_unknown() -> None:
    inventory = inventory_of(
        {
            "count": 4,
            "topology": {"links": [{"a": 0, "b": 1, "nvlinks": 4}, {"a": 2, "b": 3, "pcie": "BOARD"}]},
        }
    )
    assert link(inventory, 0, 1) == Link(nvlinks=4)
    assert link(inventory, 2, 3) == Link(pcie=PciePath.SAME_BOARD)
    assert link(inventory, 0, 2) is None
    assert [d.numa_node for d in inventory.devices] == [0, 0, 0, 0], "no preset: NUMA as before"


def test_a_device_s_own_numa_wins_over_the_preset() -> None:
    devices = [{"numa": 1 if i == 0 else None} for i in range(8)]
    devices = [{k: v for k, v in d.items() if v is not None} for d in devices]
    inventory = inventory_of({"devices": devices, "topology": {"preset": "dgx-1v"}})
    assert [d.numa_node for d in inventory.devices] == [1, 0, 0, 0, 1, 1, 1, 1]
    assert inventory.topology is not None
    assert inventory.topology.affinity(fake_uuid(0)) == "20-39,60-79", "CPUs follow the device's node"


def test_without_topology_nothing_changes() -> None:
    inventory = inventory_of({"count": 4, "numa_nodes": 2})
    assert inventory.topology is None
    assert [d.numa_node for d in inventory.devices] == [0, 0, 1, 1]


def links(*pairs: dict[str, object]) -> dict[str, object]:
    return {"links": list(pairs)}


@pytest.mark.parametrize(
    ("topology", "field", "message"),
    [
        pytest.param({"preset": "dgx-9"}, "topology.preset", "dgx-1v", id="unknown-preset"),
        pytest.param({"preset": "dgx-1v", "extra": 1}, "topology.extra", "not permitted", id="unknown-key"),
        pytest.param({"preset": "dgx-2"}, "topology", "numbers its GPUs 0-15", id="preset-size"),
        pytest.param(links({"a": 0, "b": 0}), "topology.links.0", "both 0", id="self-link"),
        pytest.param(links({"a": 0, "b": 8}), "topology", "links.0.b: no device has index 8", id="no-device"),
        pytest.param(links({"a": 0, "b": 1, "pcie": "QPI"}), "topology.links.0.pcie", "PIX", id="bad-pcie"),
        pytest.param(links({"a": 0, "b": 1, "nvlinks": -1}), "topology.links.0.nvlinks", "0", id="negative"),
        pytest.param(links({"a": 0, "b": 1, "nvswitch": True}), "topology.links.0", "nvlinks", id="no-links"),
        pytest.param(links({"a": 0, "b": 1}, {"a": 1, "b": 0}), "topology.links", "0-1", id="pair-twice"),
    ],
)
def test_errors_name_the_field(topology: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fake_config(yaml.safe_dump({"count": 8, "topology": topology}), source="gpus.yaml")
    assert caught.value.field == f"gpus.yaml: {field}"
    assert message in caught.value.reason


def test_preset_needs_indexes_from_zero() -> None:
    config = {"devices": [{"index": i + 1} for i in range(8)], "topology": {"preset": "dgx-1v"}}
    with pytest.raises(ConfigError, match="devices' indexes are 1-8"):
        parse_fake_config(yaml.safe_dump(config), source="gpus.yaml")


def test_backend_reads_the_topology_from_its_file(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump({"count": 8, "topology": {"preset": "dgx-h100"}}))
    first = FakeBackend(config_path=path).discover()
    again = FakeBackend(config_path=path).discover()
    assert first.topology is not None
    assert first == again, "rereading an unchanged file yields an equal snapshot"
