"""Presenting an inventory to people (a table) and machines (JSON)."""

from __future__ import annotations

from typing import Any

from gpu_device_plugin.inventory import Inventory


def inventory_json(inventory: Inventory) -> dict[str, Any]:
    return {
        "backend": inventory.backend,
        "driver_version": inventory.driver_version,
        "cuda_version": inventory.cuda_version,
        "control_nodes": list(inventory.control_nodes),
        "devices": [
            {
                "id": d.id,
                "index": d.index,
                "uuid": d.uuid,
                "model": d.model,
                "memory_mib": d.memory_mib,
                "minor": d.minor,
                "pci_bus_id": d.pci_bus_id,
                "numa_node": d.numa_node,
                "compute_capability": ".".join(map(str, d.compute_capability))
                if d.compute_capability
                else None,
                "health": d.health.value,
                "device_nodes": list(d.device_nodes),
            }
            for d in inventory.devices
        ],
    }


def inventory_table(inventory: Inventory) -> str:
    header = ("IDX", "UUID", "MODEL", "MEMORY", "PCI", "NUMA", "CC", "HEALTH")
    rows = [
        (
            str(d.index),
            d.uuid,
            d.model,
            f"{d.memory_mib} MiB",
            d.pci_bus_id or "-",
            "-" if d.numa_node is None else str(d.numa_node),
            ".".join(map(str, d.compute_capability)) if d.compute_capability else "-",
            d.health.value,
        )
        for d in inventory.devices
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    summary = (
        f"{len(inventory.devices)} device(s), backend {inventory.backend}, "
        f"driver {inventory.driver_version or 'n/a'}, CUDA {inventory.cuda_version or 'n/a'}"
    )
    return "\n".join([*lines, summary])
