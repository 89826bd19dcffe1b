"""`discover --topology`: the GPU link matrix as `nvidia-smi topo -m` users read it.

The JSON form lists pairs by device index with the same keys as the fake
backend's `topology.links`, so a real node's topology can be pasted into a
fake config.
"""

from __future__ import annotations

from typing import Any

from gpu_device_plugin.inventory import Device, Inventory

LEGEND = """Legend:

  X    = Self
  SYS  = Path crosses PCIe and the interconnect between NUMA nodes (e.g. QPI/UPI)
  NODE = Path crosses PCIe and the interconnect between PCIe host bridges of one NUMA node
  PHB  = Path crosses PCIe and a PCIe host bridge (typically the CPU)
  PXB  = Path crosses several PCIe bridges, without a PCIe host bridge
  PIX  = Path crosses at most one PCIe bridge (or stays on one card)
  NV#  = Path over a bonded set of # NVLinks (through NVSwitch where the note says so)
  ?    = Unknown: the link could not be read"""


def _gpus(inventory: Inventory) -> list[Device]:
    # One row per physical GPU: replicas share their GPU's UUID and its links.
    seen: set[str] = set()
    gpus = []
    for device in inventory.devices:
        if device.uuid not in seen:
            seen.add(device.uuid)
            gpus.append(device)
    return gpus


def topology_matrix(inventory: Inventory) -> str:
    gpus = _gpus(inventory)
    topology = inventory.topology
    names = [f"GPU{d.index}" for d in gpus]
    header = ["", *names, "CPU Affinity", "NUMA Affinity"]
    rows = [header]
    for a, name in zip(gpus, names, strict=True):
        cells = []
        for b in gpus:
            if a is b:
                cells.append("X")
                continue
            link = topology.link(a.uuid, b.uuid) if topology is not None else None
            cells.append("?" if link is None else link.label)
        affinity = topology.affinity(a.uuid) if topology is not None else None
        numa = "N/A" if a.numa_node is None else str(a.numa_node)
        rows.append([name, *cells, affinity or "N/A", numa])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    notes = []
    if topology is None:
        notes.append("No topology is known for these devices: every pair is unknown.")
    elif topology.links and any(link.nvswitch for _, _, link in topology.links):
        notes.append("NVLink pairs marked NV# reach each other through NVSwitch.")
    return "\n".join([*lines, "", *notes, *([""] if notes else []), LEGEND])


def topology_json(inventory: Inventory) -> dict[str, Any] | None:
    topology = inventory.topology
    if topology is None:
        return None
    index = {d.uuid: d.index for d in _gpus(inventory)}
    links = []
    for a, b, link in topology.links:
        if a not in index or b not in index:
            continue
        ia, ib = sorted((index[a], index[b]))
        links.append(
            {
                "a": ia,
                "b": ib,
                "nvlinks": link.nvlinks,
                "nvswitch": link.nvswitch,
                "pcie": None if link.pcie is None else link.pcie.key,
            }
        )
    return {
        "links": sorted(links, key=lambda entry: (entry["a"], entry["b"])),
        "cpu_affinity": {
            str(i): cpus
            for i, cpus in sorted(
                (index[uuid], cpus) for uuid, cpus in topology.cpu_affinity if uuid in index
            )
        },
    }
