"""The `topology:` section of a fake config: a named preset, explicit pairs, or both.

    topology:
      preset: dgx-1v            # one of presets.PRESET_NAMES
      links:                    # pairs by device index; each replaces the preset's pair
        - {a: 0, b: 1, nvlinks: 2, pcie: PIX}
        - {a: 2, b: 5, pcie: SYS}

A preset numbers its GPUs 0..N-1, so it needs devices with exactly those
indexes; it also gives every device that does not name its own NUMA node the
machine's NUMA node, and every device the CPUs of its NUMA node. Pairs that
neither the preset nor `links` mention stay unknown, as on a real node where
NVML could not tell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpu_device_plugin.backends.fake.presets import PresetName, preset_sizes, preset_topology
from gpu_device_plugin.inventory.topology import Link, PciePath, Topology, cpu_list

PcieKey = Literal["BOARD", "PIX", "PXB", "PHB", "NODE", "SYS"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FakeLink(_Strict):
    a: int = Field(ge=0)
    """Index of one device."""
    b: int = Field(ge=0)
    """Index of the other device."""
    nvlinks: int = Field(default=0, ge=0, le=64)
    """Active NVLinks between the two (through the switch when `nvswitch`)."""
    nvswitch: bool = False
    pcie: PcieKey | None = None
    """Nearest common PCIe ancestor as nvidia-smi labels it; BOARD: one card. Absent: unknown."""

    @model_validator(mode="after")
    def _two_devices(self) -> Self:
        if self.a == self.b:
            raise ValueError(f"a link joins two devices; a and b are both {self.a}")
        if self.nvswitch and not self.nvlinks:
            raise ValueError("nvswitch needs nvlinks: the links each GPU has into the switch")
        return self

    def link(self) -> Link:
        pcie = None if self.pcie is None else PciePath.from_key(self.pcie)
        return Link(nvlinks=self.nvlinks, nvswitch=self.nvswitch, pcie=pcie)


class FakeTopology(_Strict):
    preset: PresetName | None = None
    links: tuple[FakeLink, ...] = ()

    @field_validator("links")
    @classmethod
    def _pairs_once(cls, links: tuple[FakeLink, ...]) -> tuple[FakeLink, ...]:
        counts = Counter(frozenset((link.a, link.b)) for link in links)
        twice = sorted(tuple(sorted(pair)) for pair, n in counts.items() if n > 1)
        if twice:
            raise ValueError(f"pairs given more than once: {', '.join(f'{a}-{b}' for a, b in twice)}")
        return links

    def check_devices(self, indexes: Sequence[int]) -> None:
        """Raise ValueError unless the preset and every link fit these device indexes."""
        known = set(indexes)
        if self.preset is not None:
            sizes = preset_sizes(self.preset)
            if len(known) not in sizes or known != set(range(len(known))):
                wanted = " or ".join(f"0-{n - 1}" for n in sizes)
                raise ValueError(
                    f"preset {self.preset} numbers its GPUs {wanted}; "
                    f"the devices' indexes are {_ranges(indexes)}"
                )
        for position, link in enumerate(self.links):
            for end in ("a", "b"):
                if getattr(link, end) not in known:
                    raise ValueError(
                        f"links.{position}.{end}: no device has index {getattr(link, end)} "
                        f"(indexes: {_ranges(indexes)})"
                    )

    def preset_numa(self, count: int) -> Mapping[int, int]:
        """The preset's NUMA node per device index, for `count` devices (empty without a preset)."""
        if self.preset is None:
            return {}
        return dict(enumerate(preset_topology(self.preset, count).numa))

    def build(self, devices: Mapping[int, tuple[str, int | None]]) -> Topology:
        """The topology over devices given as index -> (uuid, NUMA node)."""
        links: dict[tuple[str, str], Link] = {}
        affinity: dict[str, str] = {}
        if self.preset is not None:
            preset = preset_topology(self.preset, len(devices))
            for (i, j), link in preset.links.items():
                links[(devices[i][0], devices[j][0])] = link
            for uuid, numa in devices.values():
                if numa is not None and numa < len(preset.cpus_by_numa):
                    affinity[uuid] = preset.cpus_by_numa[numa]
        for given in self.links:
            ua, ub = devices[given.a][0], devices[given.b][0]
            links.pop((ub, ua), None)
            links[(ua, ub)] = given.link()
        return Topology.of(links, affinity)


def _ranges(indexes: Sequence[int]) -> str:
    return cpu_list(indexes) or "none"
