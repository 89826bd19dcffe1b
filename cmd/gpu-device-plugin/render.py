"""Presenting an inventory to people (a table) and machines (JSON).

What discovery could not read is shown as unknown ("-" in the table, null in
JSON), never as a made-up value: a lost GPU is "Unhealthy (GPU is lost)" with
no model or memory, not "unknown 0 MiB Healthy".
"""

from __future__ import annotations

from typing import Any

from gpu_device_plugin.inventory import Device, Inventory, MigDevice, MigMode

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


def _mig_device_json(mig: MigDevice, parent: Device) -> dict[str, Any]:
    return {
        "id": mig.id,
        "index": f"{parent.index}:{mig.index}",
        "uuid": mig.uuid,
        "profile": mig.profile.name,
        "memory_mib": mig.profile.memory_mib or None,
        "gpu_instance": mig.gi_id,
        "compute_instance": mig.ci_id,
        "device_nodes": list(mig.device_nodes),
    }


def inventory_json(inventory: Inventory) -> dict[str, Any]:
    by_parent = _mig_by_parent(inventory)
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
                # Under their parent, by MIG index; [] for a GPU without MIG devices.
                "mig_devices": [_mig_device_json(m, d) for m in by_parent.get(d.id, ())],
            }
            for d in inventory.devices
        ],
    }


def inventory_table(inventory: Inventory) -> str:
    header = ("IDX", "UUID", "MODEL", "MEMORY", "PCI", "NUMA", "CC", "MIG", "HEALTH")
    by_parent = _mig_by_parent(inventory)
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
    # Each MIG-enabled GPU's MIG devices right under it, indexed <gpu>:<mig> as NVIDIA names them.
    for device in inventory.devices:
        children = [
            (
                f"{device.index}:{m.index}",
                m.uuid,
                f"  MIG {m.profile.name} (GI {m.gi_id}, CI {m.ci_id})",
                f"{m.profile.memory_mib} MiB" if m.profile.memory_mib else "-",
                "",
                "",
                "",
                "",
                "",
            )
            for m in by_parent.get(device.id, ())
        ]
        if children:
            at = next(i for i, r in enumerate(rows) if r[0] == str(device.index) and r[1] == device.uuid)
            rows[at + 1 : at + 1] = children
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    mig = f", {len(inventory.mig_devices)} MIG device(s)" if inventory.mig_devices else ""
    summary = (
        f"{len(inventory.devices)} device(s){mig}, backend {inventory.backend}, "
        f"driver {inventory.driver_version or 'n/a'}, CUDA {inventory.cuda_version or 'n/a'}"
    )
    return "\n".join([*lines, summary])


def _mig_by_parent(inventory: Inventory) -> dict[str, list[MigDevice]]:
    grouped: dict[str, list[MigDevice]] = {}
    for mig in inventory.mig_devices:
        grouped.setdefault(mig.parent_id, []).append(mig)
    return grouped
