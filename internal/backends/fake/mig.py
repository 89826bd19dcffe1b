"""MIG for the fake backend: a device's `mig: [1g.10gb, 3g.40gb]` made into MIG devices.

The profiles are NVIDIA's, per product, with the slices, memory and engines of
the real GPU instance profiles (`nvidia-smi mig -lgip` on each product; the
names follow from the memory by NVIDIA's rounding, inventory/mig_names.py,
which a test checks for every entry). A device's product is told from its
model and memory: A100 40GB, A100 80GB, H100 80GB.

GPU instance ids are the list position + 1 (compute instance 0), and the MIG
UUIDs are derived from the parent's UUID, that id and the profile, so they are
the same on every start (the kubelet checkpoints them) and a changed profile
is a new instance, as on a real GPU. The caps nodes follow the driver's
numbering (hack/nvmlfake/README.md) and are listed only for a device that
lists device nodes of its own: the fake's GPUs have none by default, so that a
kind cluster is never handed a node that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpu_device_plugin.inventory import Device, MigDevice, MigProfile

_MIG_UUID_NAMESPACE = uuid.UUID("0b6d6f6e-5f0e-4c1e-9a59-3f7c2b1d4e20")
GPU_SLICES = 7


@dataclass(frozen=True, slots=True)
class _Entry:
    # NVML_GPU_INSTANCE_PROFILE_* index, slices, MiB, SMs, copy engines, decoders, encoders, JPEG, OFA.
    index: int
    slices: int
    memory_mib: int
    sms: int
    ce: int
    dec: int
    enc: int = 0
    jpeg: int = 0
    ofa: int = 0


A100_40GB: Mapping[str, _Entry] = {
    "1g.5gb": _Entry(0x0, 1, 4864, 14, 1, 0),
    "1g.5gb+me": _Entry(0x7, 1, 4864, 14, 1, 1, jpeg=1, ofa=1),
    "1g.10gb": _Entry(0x9, 1, 9856, 14, 1, 1),
    "2g.10gb": _Entry(0x1, 2, 9856, 28, 2, 1),
    "3g.20gb": _Entry(0x2, 3, 19968, 42, 3, 2),
    "4g.20gb": _Entry(0x3, 4, 19968, 56, 4, 2),
    "7g.40gb": _Entry(0x4, 7, 40192, 98, 7, 5, jpeg=1, ofa=1),
}
A100_80GB: Mapping[str, _Entry] = {
    "1g.10gb": _Entry(0x0, 1, 9856, 14, 1, 0),
    "1g.10gb+me": _Entry(0x7, 1, 9856, 14, 1, 1, jpeg=1, ofa=1),
    "1g.20gb": _Entry(0x9, 1, 19968, 14, 1, 1),
    "2g.20gb": _Entry(0x1, 2, 19968, 28, 2, 1),
    "3g.40gb": _Entry(0x2, 3, 40192, 42, 3, 2),
    "4g.40gb": _Entry(0x3, 4, 40192, 56, 4, 2),
    "7g.80gb": _Entry(0x4, 7, 80896, 98, 7, 5, jpeg=1, ofa=1),
}
H100_80GB: Mapping[str, _Entry] = {
    "1g.10gb": _Entry(0x0, 1, 9984, 16, 1, 1, jpeg=1),
    "1g.10gb+me": _Entry(0x7, 1, 9984, 16, 1, 1, jpeg=1, ofa=1),
    "1g.20gb": _Entry(0x9, 1, 20096, 26, 1, 1, jpeg=1),
    "2g.20gb": _Entry(0x1, 2, 20096, 32, 2, 2, jpeg=2),
    "3g.40gb": _Entry(0x2, 3, 40448, 60, 3, 3, jpeg=3),
    "4g.40gb": _Entry(0x3, 4, 40448, 64, 4, 4, jpeg=4),
    "7g.80gb": _Entry(0x4, 7, 81152, 132, 8, 7, jpeg=7, ofa=1),
}
# Product -> (its profiles, its total memory in MiB as NVML reports it).
PRODUCTS: Mapping[str, tuple[Mapping[str, _Entry], int]] = {
    "A100 40GB": (A100_40GB, 40960),
    "A100 80GB": (A100_80GB, 81920),
    "H100 80GB": (H100_80GB, 81559),
}


def product_of(model: str, memory_mib: int) -> str | None:
    """Which MIG product table a fake device's model and memory mean; None: no MIG table for it."""
    if "A100" in model:
        return "A100 40GB" if memory_mib <= 48 * 1024 else "A100 80GB"
    if "H100" in model:
        return "H100 80GB"
    return None


def check_layout(model: str, memory_mib: int, profiles: Sequence[str]) -> str | None:
    """Why a device cannot hold `profiles` (unknown product or profile, too many slices); None: it can."""
    product = product_of(model, memory_mib)
    if product is None:
        return f"MIG profiles are known for {', '.join(PRODUCTS)}, not for model {model!r}"
    table = PRODUCTS[product][0]
    unknown = [p for p in profiles if p not in table]
    if unknown:
        return f"{unknown[0]!r} is not a MIG profile of the {product} (known: {', '.join(table)})"
    slices = sum(table[p].slices for p in profiles)
    if slices > GPU_SLICES:
        return f"the profiles take {slices} slices; the {product} has {GPU_SLICES}"
    return None


def mig_devices(parent: Device, profiles: Sequence[str]) -> tuple[MigDevice, ...]:
    """The parent's MIG devices for a layout check_layout accepted."""
    product = product_of(parent.model, parent.memory_mib)
    if product is None:
        raise ValueError(f"no MIG profiles for model {parent.model!r}")
    table = PRODUCTS[product][0]
    out = []
    for position, name in enumerate(profiles):
        entry = table[name]
        gi, ci = position + 1, 0
        mig_uuid = f"MIG-{uuid.uuid5(_MIG_UUID_NAMESPACE, f'{parent.uuid}/{gi}/{ci}/{name}')}"
        nodes: tuple[str, ...] = ()
        if parent.device_nodes and parent.minor is not None:
            gi_minor = 3 + 135 * parent.minor + 9 * gi
            nodes = (
                f"/dev/nvidia-caps/nvidia-cap{gi_minor}",
                f"/dev/nvidia-caps/nvidia-cap{gi_minor + 1 + ci}",
            )
        out.append(
            MigDevice(
                id=mig_uuid,
                uuid=mig_uuid,
                parent_id=parent.id,
                index=position,
                profile=MigProfile(
                    name=name,
                    gi_slices=entry.slices,
                    ci_slices=entry.slices,
                    memory_mib=entry.memory_mib,
                    multiprocessors=entry.sms,
                    copy_engines=entry.ce,
                    decoders=entry.dec,
                    encoders=entry.enc,
                    jpeg_engines=entry.jpeg,
                    ofa_engines=entry.ofa,
                ),
                gi_id=gi,
                ci_id=ci,
                device_nodes=nodes,
            )
        )
    return tuple(out)
