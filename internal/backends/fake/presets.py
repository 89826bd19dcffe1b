"""Named topologies of real machines, for the fake backend (`topology: {preset: ...}`).

Each preset gives, for GPUs numbered 0..N-1, the link of every pair, the NUMA
node of every GPU and the CPUs near each NUMA node, as `nvidia-smi topo -m`
shows them on that machine. Pure data: the fake backend maps the numbers to
its devices' UUIDs.

- dgx-1v: 8 V100 in a hybrid cube-mesh. Every GPU has six NVLinks; some pairs
  are linked twice, some once, some not at all (those cross the sockets).
  PCIe: two GPUs per switch, two switches per CPU.
- dgx-a100: 8 A100, every pair through NVSwitch with 12 links (NV12). PCIe:
  pairs behind a two-level switch tree, four GPUs per CPU socket.
- dgx-h100: 8 H100, every pair through NVSwitch with 18 links (NV18). PCIe:
  every GPU behind its own switch, four per CPU socket.
- pcie-2numa: 4 or 8 GPUs, no NVLink, two NUMA nodes with two PCIe switches each.
- dgx-2: 16 V100 on two baseboards whose NVSwitches are joined, so every pair
  is NV6. PCIe: two GPUs per leaf switch, four per upper switch, one board per CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from gpu_device_plugin.inventory.topology import Link, PciePath

PresetName = Literal["dgx-1v", "dgx-a100", "dgx-h100", "pcie-2numa", "dgx-2"]


@dataclass(frozen=True)
class PresetTopology:
    name: str
    links: Mapping[tuple[int, int], Link]
    numa: tuple[int, ...]
    cpus_by_numa: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.numa)


def _pcie_by_groups(i: int, j: int, *levels: tuple[int, PciePath]) -> PciePath:
    """The nearest level whose group size puts i and j in one group; SYS otherwise."""
    for group, path in levels:
        if i // group == j // group:
            return path
    return PciePath.SYSTEM


# The DGX-1V NVLink table: GPU pair -> bonded links (nvidia-smi topo -m on a DGX-1 with V100).
DGX_1V_NVLINKS: Mapping[tuple[int, int], int] = {
    (0, 1): 1, (0, 2): 1, (0, 3): 2, (0, 4): 2,
    (1, 2): 2, (1, 3): 1, (1, 5): 2,
    (2, 3): 2, (2, 6): 1,
    (3, 7): 1,
    (4, 5): 1, (4, 6): 1, (4, 7): 2,
    (5, 6): 2, (5, 7): 1,
    (6, 7): 2,
}  # fmt: skip


def _dgx_1v(count: int) -> PresetTopology:
    links = {
        (i, j): Link(
            nvlinks=DGX_1V_NVLINKS.get((i, j), 0),
            pcie=_pcie_by_groups(i, j, (2, PciePath.SINGLE_SWITCH), (4, PciePath.HOST_BRIDGE)),
        )
        for i in range(count)
        for j in range(i + 1, count)
    }
    return PresetTopology("dgx-1v", links, tuple(i // 4 for i in range(count)), ("0-19,40-59", "20-39,60-79"))


def _nvswitch(
    name: str, nvlinks: int, cpus: tuple[str, ...], *levels: tuple[int, PciePath]
) -> Callable[[int], PresetTopology]:
    def build(count: int) -> PresetTopology:
        per_numa = count // len(cpus)
        links = {
            (i, j): Link(nvlinks=nvlinks, nvswitch=True, pcie=_pcie_by_groups(i, j, *levels))
            for i in range(count)
            for j in range(i + 1, count)
        }
        return PresetTopology(name, links, tuple(i // per_numa for i in range(count)), cpus)

    return build


def _pcie_2numa(count: int) -> PresetTopology:
    per_numa = count // 2
    per_switch = max(per_numa // 2, 1)
    links = {
        (i, j): Link(
            pcie=_pcie_by_groups(i, j, (per_switch, PciePath.SINGLE_SWITCH), (per_numa, PciePath.NUMA_NODE))
        )
        for i in range(count)
        for j in range(i + 1, count)
    }
    return PresetTopology(
        "pcie-2numa", links, tuple(i // per_numa for i in range(count)), ("0-15,32-47", "16-31,48-63")
    )


@dataclass(frozen=True)
class _Preset:
    sizes: tuple[int, ...]
    build: Callable[[int], PresetTopology]


PRESETS: Mapping[str, _Preset] = {
    "dgx-1v": _Preset((8,), _dgx_1v),
    "dgx-a100": _Preset(
        (8,),
        _nvswitch(
            "dgx-a100",
            12,
            ("0-63,128-191", "64-127,192-255"),
            (2, PciePath.MULTIPLE_SWITCHES),
            (4, PciePath.NUMA_NODE),
        ),
    ),
    "dgx-h100": _Preset(
        (8,),
        _nvswitch("dgx-h100", 18, ("0-55,112-167", "56-111,168-223"), (4, PciePath.NUMA_NODE)),
    ),
    "pcie-2numa": _Preset((4, 8), _pcie_2numa),
    "dgx-2": _Preset(
        (16,),
        _nvswitch(
            "dgx-2",
            6,
            ("0-23,48-71", "24-47,72-95"),
            (2, PciePath.SINGLE_SWITCH),
            (4, PciePath.MULTIPLE_SWITCHES),
            (8, PciePath.NUMA_NODE),
        ),
    ),
}
PRESET_NAMES: tuple[str, ...] = get_args(PresetName)


def preset_sizes(name: str) -> tuple[int, ...]:
    return PRESETS[name].sizes


def preset_topology(name: str, count: int | None = None) -> PresetTopology:
    """The preset for `count` GPUs (default: its first size); ValueError if it has no such size."""
    preset = PRESETS[name]
    size = preset.sizes[0] if count is None else count
    if size not in preset.sizes:
        sizes = " or ".join(map(str, preset.sizes))
        raise ValueError(f"preset {name} describes {sizes} GPUs, not {size}")
    return preset.build(size)
