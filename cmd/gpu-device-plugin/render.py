"""Presenting an inventory to people (a table) and machines (JSON).

What discovery could not read is shown as unknown ("-" in the table, null in
JSON), never as a made-up value: a lost GPU is "Unhealthy (GPU is lost)" with
no model or memory, not "unknown 0 MiB Healthy".
"""

from __future__ import annotations

from typing import Any

from gpu_device_plugin.inventory import Device, Inventory, MigMode

UNKNOWN_MODEL = "unknown"


def _mig_json(mode: MigMode | None) -> dict[str, str] | None:
    if mode is None:
        return None
    return {
        "current": "enabled" if mode.current else "disabled",
        "pending": "enabled" if mode.pending else "disabled",
    }


def _mig_cell(device: Device) -> str:
    if device.mig_mode is not None:
        return device.mig_mode.label
    return "n/a" if device.mig_capable is False else "-"


def _health_cell(device: Device) -> str:
    if device.healthy or not device.health_reason:
        return device.health.value
    return f"{device.health.value} ({device.health_reason})"


def inventory_json(inventory: Inventory) -> dict[str, Any]:
    return {
        "backend": inventory.backend,
        "driver_version": inventory.driver_version,
        "cuda_version": inventory.cuda_version,
        "control_nodes": list(inventory.control_nodes),
        "dev_root": inventory.dev_root,
        # Counted by the driver, not identifiable, so not served (a GPU lost before start).
        "unidentified": [{"index": i, "reason": why} for i, why in inventory.unidentified],
        "devices": [
            {
                "id": d.id,
                "index": d.index,
                "uuid": d.uuid,
                "model": None if d.model == UNKNOWN_MODEL else d.model,
                "memory_mib": d.memory_mib or None,
                "minor": d.minor,
                "pci_bus_id": d.pci_bus_id,
                "numa_node": d.numa_node,
                "compute_capability": ".".join(map(str, d.compute_capability))
                if d.compute_capability
                else None,
                "health": d.health.value,
                "health_reason": d.health_reason or None,
                "mig_capable": d.mig_capable,
                "mig_mode": _mig_json(d.mig_mode),
                "device_nodes": list(d.device_nodes),
            }
            for d in inventory.devices
        ],
    }


def inventory_table(inventory: Inventory) -> str:
    header = ("IDX", "UUID", "MODEL", "MEMORY", "PCI", "NUMA", "CC", "MIG", "HEALTH")
    rows = [
        (
            str(d.index),
            d.uuid,
            "-" if d.model == UNKNOWN_MODEL else d.model,
            f"{d.memory_mib} MiB" if d.memory_mib else "-",
            d.pci_bus_id or "-",
            "-" if d.numa_node is None else str(d.numa_node),
            ".".join(map(str, d.compute_capability)) if d.compute_capability else "-",
            _mig_cell(d),
            _health_cell(d),
        )
        for d in inventory.devices
    ]
    for index, why in inventory.unidentified:
        rows.append((str(index), "-", "-", "-", "-", "-", "-", "-", f"not served ({why})"))
    rows.sort(key=lambda r: int(r[0]))
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
