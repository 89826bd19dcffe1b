"""How the GPUs of a node reach each other: NVLink and PCIe, pair by pair.

Discovery builds it (NVML, or the fake backend's presets); the allocator scores
sets of devices with it. Like the rest of the inventory it is immutable and does
no I/O. It describes the hardware and never judges it: what a link is worth to
a job is the allocator's business (allocator/scoring.py).

Pairs are keyed by the GPUs' UUIDs (`Device.uuid`), not by device ids, so that
replicas of one physical GPU (several device ids, one UUID) share its links.
A pair that is missing is unknown: that is never an error, only less to go on.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class PciePath(enum.IntEnum):
    """The nearest common PCIe ancestor of two GPUs, nearest first.

    The values are NVML's `nvmlGpuTopologyLevel_t`, so an NVML answer converts
    with `PciePath(level)`.
    """

    SAME_BOARD = 0  # NVML_TOPOLOGY_INTERNAL: two GPUs on one card
    SINGLE_SWITCH = 10  # NVML_TOPOLOGY_SINGLE
    MULTIPLE_SWITCHES = 20  # NVML_TOPOLOGY_MULTIPLE
    HOST_BRIDGE = 30  # NVML_TOPOLOGY_HOSTBRIDGE
    NUMA_NODE = 40  # NVML_TOPOLOGY_NODE: host bridges of one NUMA node
    SYSTEM = 50  # NVML_TOPOLOGY_SYSTEM: across NUMA nodes (QPI/UPI, Infinity Fabric)

    @property
    def label(self) -> str:
        """The column text of `nvidia-smi topo -m`."""
        return _LABELS[self]

    @property
    def key(self) -> str:
        """The name in config files: the nvidia-smi label, BOARD for the same card."""
        return "BOARD" if self is PciePath.SAME_BOARD else self.label

    @classmethod
    def from_key(cls, key: str) -> PciePath:
        return _BY_KEY[key]


# nvidia-smi has no label of its own for two GPUs on one card: their path has at
# most one (on-board) bridge, so it shows PIX, and so do we.
_LABELS = {
    PciePath.SAME_BOARD: "PIX",
    PciePath.SINGLE_SWITCH: "PIX",
    PciePath.MULTIPLE_SWITCHES: "PXB",
    PciePath.HOST_BRIDGE: "PHB",
    PciePath.NUMA_NODE: "NODE",
    PciePath.SYSTEM: "SYS",
}
_BY_KEY = {p.key: p for p in PciePath}
PCIE_KEYS = tuple(_BY_KEY)


@dataclass(frozen=True, slots=True)
class Link:
    """What connects one pair of GPUs."""

    # Active NVLinks between the two; through the switch for NVSwitch systems
    # (where every pair shows the links each GPU has into the fabric). None:
    # NVLink could not be read, which is not the same as "none".
    nvlinks: int | None = 0
    nvswitch: bool = False
    # None: the PCIe relationship is unknown.
    pcie: PciePath | None = None

    def __post_init__(self) -> None:
        if self.nvlinks is not None and self.nvlinks < 0:
            raise ValueError(f"nvlinks must not be negative, got {self.nvlinks}")

    @property
    def label(self) -> str:
        """The cell of `nvidia-smi topo -m`: NVLink wins, then PCIe; '?' when unknown."""
        if self.nvlinks:
            return f"NV{self.nvlinks}"
        return "?" if self.pcie is None else self.pcie.label


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class Topology:
    """Links between pairs of GPUs (by UUID) and each GPU's CPU affinity.

    The fields are kept in a canonical form (pairs oriented and sorted), so
    equal topologies compare equal however they were assembled;
    `Topology.of(...)` takes pairs as a mapping too.
    """

    links: tuple[tuple[str, str, Link], ...] = ()
    # Per GPU UUID, the CPUs nearest to it as a list like "0-19,40-59".
    cpu_affinity: tuple[tuple[str, str], ...] = ()
    _links: Mapping[tuple[str, str], Link] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    _affinity: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], Link] = {}
        for a, b, link in self.links:
            if a == b:
                raise ValueError(f"a link needs two GPUs, got {a!r} twice")
            key = pair_key(a, b)
            if key in index:
                raise ValueError(f"the link between {a!r} and {b!r} is given twice")
            index[key] = link
        # Canonical whatever the caller passed: pairs oriented and sorted.
        object.__setattr__(self, "links", tuple((a, b, index[(a, b)]) for a, b in sorted(index)))
        object.__setattr__(self, "cpu_affinity", tuple(sorted(dict(self.cpu_affinity).items())))
        object.__setattr__(self, "_links", index)
        object.__setattr__(self, "_affinity", dict(self.cpu_affinity))

    @classmethod
    def of(
        cls,
        links: Mapping[tuple[str, str], Link] | Iterable[tuple[str, str, Link]],
        cpu_affinity: Mapping[str, str] | None = None,
    ) -> Topology:
        """A topology from pairs in any order and orientation."""
        items = links.items() if isinstance(links, Mapping) else ((((a, b), link) for a, b, link in links))
        return cls(
            links=tuple((a, b, link) for (a, b), link in items),
            cpu_affinity=tuple((cpu_affinity or {}).items()),
        )

    def link(self, a: str, b: str) -> Link | None:
        """The link between two GPUs (either order), or None when unknown."""
        return self._links.get(pair_key(a, b))

    def affinity(self, uuid: str) -> str | None:
        return self._affinity.get(uuid)


def cpu_list(cpus: Iterable[int]) -> str:
    """Render CPU numbers the way the kernel and nvidia-smi do: "0-19,40-59"."""
    ordered = sorted(set(cpus))
    runs: list[str] = []
    start = prev = None
    for cpu in ordered:
        if prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    if start is not None:
        runs.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(runs)
