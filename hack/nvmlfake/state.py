"""Faults and the state file: what the C library reads, written atomically.

The profile says what the node is; `Faults` says what is wrong with it now and
which events have been injected. `render` turns both into the line format
csrc/state.c parses (one record per line, tab-separated; see README.md), and
`write_atomic` replaces a file by rename so the library never reads half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gdp_hack.nvmlfake.profile import Profile, ProfileError, cpu_words

FORMAT = "fake-nvml-state\t1"
# Events kept in the file: the C reader holds at most 1024 (FAKE_MAX_EVENTS); a
# waiter that falls further behind than this loses the oldest, which no test does.
KEEP_EVENTS = 512
NVML_ERROR_DRIVER_NOT_LOADED = 9
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8


class Hang(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: int | None  # None: any GPU, and the calls that name none
    millis: int = Field(ge=0)
    functions: tuple[str, ...] = ("*",)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    gpu: int
    mig: int | None = None
    type: int
    data: int = 0


class Faults(BaseModel):
    """What is wrong now, plus the event history (sequence numbers never reused)."""

    model_config = ConfigDict(extra="forbid")

    init_error: int = 0
    lost: set[int] = Field(default_factory=set)
    events_unsupported: set[int] = Field(default_factory=set)
    hangs: list[Hang] = Field(default_factory=list)
    seq: int = 0
    events: list[Event] = Field(default_factory=list)


def _text(value: str, where: str) -> str:
    if "\t" in value or "\n" in value:
        raise ProfileError(f"{where}: tabs and newlines cannot be represented: {value!r}")
    return value


def render(profile: Profile, faults: Faults) -> str:
    """The state file's text for this profile with these faults."""
    lines = [FORMAT, f"init\t{faults.init_error}"]
    s = profile.system
    lines.append(f"system\t{_text(s.driver, 'system.driver')}\t{s.cuda_int}\t{_text(s.nvml, 'system.nvml')}")
    lines.append(f"seq\t{faults.seq}")
    for p in profile.mig_profiles:
        fields = (
            p.profile, p.id, int(p.p2p), p.slices, p.instances, p.multiprocessors, p.copy_engines,
            p.decoders, p.encoders, p.jpeg, p.ofa, p.memory_mib,
        )  # fmt: skip
        lines.append("\t".join(["profile", *map(str, fields), p.name]))
    for i, d in enumerate(profile.devices):
        major, minor = d.cc
        pending = d.mig.current if d.mig.pending is None else d.mig.pending
        gpu_fields: tuple[object, ...] = (
            i, _text(d.uuid, f"devices[{i}].uuid"), _text(d.name, f"devices[{i}].name"),
            d.memory_mib * 1024 * 1024, d.reserved_mib * 1024 * 1024, d.pci_bus_id,
            hex(d.pci_device_id), hex(d.pci_subsystem_id), d.minor,
            -1 if d.numa_node is None else d.numa_node, major, minor, hex(d.event_mask),
            int(d.mig_capable), int(d.mig.current), int(pending),
            d.mig.max_devices, d.nvlinks,
        )  # fmt: skip
        lines.append("\t".join(["gpu", *map(str, gpu_fields)]))
    for i, d in enumerate(profile.devices):
        words = cpu_words(d.cpu_affinity)
        if words:
            lines.append("\t".join(["cpus", str(i), *(hex(w) for w in words)]))
    for i, links in enumerate(profile.links()):
        for n, link in enumerate(links):
            remote = f"{link.remote_bus_id}\t{hex(link.remote_pci_device_id)}\t{int(link.remote_type)}"
            lines.append(f"link\t{i}\t{n}\t{remote}")
    count = len(profile.devices)
    for a in range(count):
        for b in range(a + 1, count):
            lines.append(f"ancestor\t{a}\t{b}\t{int(profile.level(a, b))}")
    for i, d in enumerate(profile.devices):
        for inst in d.mig.instances:
            gi_profile = profile.profile_named(inst.profile).profile
            lines.append(f"mig\t{i}\t{profile.mig_uuid(i, inst)}\t{inst.gi}\t{inst.ci}\t{gi_profile}")
    lines += [f"lost\t{g}" for g in sorted(faults.lost)]
    lines += [f"events-unsupported\t{g}" for g in sorted(faults.events_unsupported)]
    for h in faults.hangs:
        gpu = -1 if h.gpu is None else h.gpu
        lines.append(f"hang\t{gpu}\t{h.millis}\t{','.join(h.functions) or '*'}")
    for e in faults.events[-KEEP_EVENTS:]:
        mig = -1 if e.mig is None else e.mig
        lines.append(f"event\t{e.seq}\t{e.gpu}\t{mig}\t{hex(e.type)}\t{e.data}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Replaces `path` by rename: readers see the old file or the new one, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
