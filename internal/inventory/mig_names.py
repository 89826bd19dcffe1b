"""NVIDIA's names for MIG profiles: `<g>g.<mem>gb`, `<c>c.<g>g.<mem>gb`, and the engine suffixes.

The names are what NVIDIA's device plugin and GPU Feature Discovery (through
go-nvlib) call a MIG device's profile, so that resource names (`mig-1g.10gb`)
and labels match theirs exactly:

- `<g>`: the GPU instance's slices; `<c>`: the compute instance's, written only
  when it is smaller than the GPU instance (`1c.3g.40gb`);
- `<mem>`: the GPU instance's memory as a fraction of the whole GPU, rounded up
  to eighths, times the GPU's memory in whole GiB (rounded up), rounded. So the
  1-slice instance of an 80 GB A100 (9856 MiB of 81920) is "10gb", not "9gb";
- a suffix from the GPU instance profile's kind: `+me` (media extensions: the
  REV1 profiles), `+me.all` (ALL_ME), `+gfx` (GFX), `-me` (NO_ME).

Pure: no NVML here; the nvml backend feeds in what NVML reports, the fake
backend its table.
"""

from __future__ import annotations

import math

# NVML_GPU_INSTANCE_PROFILE_* index -> the suffix NVIDIA appends to the name.
_SUFFIXES = {
    0x7: "+me",  # 1_SLICE_REV1
    0x8: "+me",  # 2_SLICE_REV1
    0xA: "+gfx",  # 1_SLICE_GFX
    0xB: "+gfx",  # 2_SLICE_GFX
    0xC: "+gfx",  # 4_SLICE_GFX
    0xD: "-me",  # 1_SLICE_NO_ME
    0xE: "-me",  # 2_SLICE_NO_ME
    0xF: "+me.all",  # 1_SLICE_ALL_ME
    0x10: "+me.all",  # 2_SLICE_ALL_ME
    # 3_SLICE_GFX is newer than go-nvlib's table; named as the other GFX profiles.
    0x11: "+gfx",
}

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


def profile_suffix(profile_index: int) -> str:
    """The name's suffix for an NVML GPU instance profile index ("" for the plain ones)."""
    return _SUFFIXES.get(profile_index, "")


def memory_gb(instance_mib: int, gpu_total_bytes: int) -> int:
    """The `<mem>` of the name: NVIDIA's rounding of the instance's share of the GPU's memory."""
    if gpu_total_bytes <= 0:
        raise ValueError("the GPU's total memory must be positive")
    eighths = math.ceil(instance_mib * _MIB * 8 / gpu_total_bytes)
    whole_gib = -(-gpu_total_bytes // _GIB)
    # Go's math.Round rounds halves away from zero; Python's round() would round them to even.
    return math.floor(eighths / 8 * whole_gib + 0.5)


def profile_name(*, gi_slices: int, ci_slices: int, memory: int, suffix: str = "") -> str:
    """`<g>g.<mem>gb<suffix>`, or `<c>c.<g>g.<mem>gb<suffix>` for a smaller compute instance."""
    base = f"{gi_slices}g.{memory}gb"
    return (base if ci_slices == gi_slices else f"{ci_slices}c.{base}") + suffix
