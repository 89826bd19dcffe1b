"""The fake node's YAML profile: what the C NVML fake answers, as a typed model.

A profile describes one node as NVML would report it: versions, GPUs, how the
GPUs are linked (NVLink to each other or to NVSwitches, PCIe common ancestors)
and MIG. `load` reads and checks one; every error names the key at fault. The
profile is data only: faults are added at run time by `nvmlfake.driver`.
"""

from __future__ import annotations

import enum
import uuid as uuidlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"  # beside the real file, not its link

# nvml.h nvmlEventType* bits, by the names a profile uses.
EVENT_TYPES = {
    "single_bit_ecc": 0x1,
    "double_bit_ecc": 0x2,
    "pstate": 0x4,
    "xid": 0x8,
    "clock": 0x10,
    "power_source": 0x80,
}
NVLINK_MAX_LINKS = 36  # NVML_NVLINK_MAX_LINKS
MAX_GPUS = 64  # FAKE_MAX_GPUS in csrc/fake_nvml.h
MAX_MIG_DEVICES = 8  # FAKE_MAX_MIG
GPU_INSTANCE_PROFILE_COUNT = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT
NVSWITCH_PCI_DEVICE_ID = 0x1AF110DE  # NVSwitch (device 0x1af1, vendor 0x10de)


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and key."""


class Level(enum.IntEnum):
    """nvmlGpuTopologyLevel_t: how far apart two GPUs are on PCIe."""

    internal = 0
    single = 10
    multiple = 20
    hostbridge = 30
    node = 40
    system = 50


class RemoteType(enum.IntEnum):
    """nvmlIntNvLinkDeviceType_t: what is at the far end of an NVLink."""

    gpu = 0
    ibmnpu = 1
    switch = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bus_id(value: str) -> str:
    """One spelling of a PCI bus id: lower case, 8-digit domain, as NVML prints it."""
    try:
        domain, bus, rest = value.lower().split(":")
        slot, function = rest.split(".")
        parts = int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16)
    except ValueError as err:
        raise ValueError(f"not a PCI bus id (domain:bus:device.function): {value!r}") from err
    return f"{parts[0]:08x}:{parts[1]:02x}:{parts[2]:02x}.{parts[3]:x}"


BusId = Annotated[str, Field(description="PCI bus id, e.g. 0000:07:00.0")]


def cpu_words(cpus: str) -> list[int]:
    """A cpu list ("0-15,32-47") as 64-bit mask words, as nvmlDeviceGetCpuAffinity gives them."""
    words: list[int] = []
    for part in filter(None, (p.strip() for p in cpus.split(","))):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if lo > hi or hi >= 64 * 64:
            raise ValueError(f"bad CPU range {part!r}")
        for cpu in range(lo, hi + 1):
            while len(words) <= cpu // 64:
                words.append(0)
            words[cpu // 64] |= 1 << (cpu % 64)
    return words


class MigProfile(_Model):
    """A GPU instance profile (nvmlGpuInstanceProfileInfo_v2_t) the product offers."""

    profile: int = Field(ge=0, lt=GPU_INSTANCE_PROFILE_COUNT, description="NVML_GPU_INSTANCE_PROFILE_* index")
    id: int = Field(ge=0, description="the profile id NVML reports (e.g. 19 for 1g.10gb on A100)")
    name: str = Field(pattern=r"^\d+g\.\d+gb(\+\w+)?$")
    slices: int = Field(ge=1, le=8)
    instances: int = Field(ge=1, le=8, description="how many of it fit on one GPU")
    multiprocessors: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpeg: int = 0
    ofa: int = 0
    p2p: bool = False


class MigInstance(_Model):
    """One MIG device: a compute instance (ci) inside a GPU instance (gi) of a profile."""

    profile: str
    gi: int = Field(ge=0, le=14)
    ci: int = Field(default=0, ge=0, le=7)
    uuid: str | None = Field(default=None, pattern=r"^MIG-")


class Mig(_Model):
    """MIG mode (current/pending) and the instances created."""

    current: bool = False
    pending: bool | None = None  # default: as current
    max_devices: int = Field(default=7, ge=1, le=MAX_MIG_DEVICES)
    instances: tuple[MigInstance, ...] = ()

    @model_validator(mode="after")
    def _instances_need_mig(self) -> Mig:
        if self.instances and not self.current:
            raise ValueError("instances: MIG devices exist only with MIG mode current: true")
        if len(self.instances) > self.max_devices:
            raise ValueError(
                f"instances: {len(self.instances)} MIG devices, the GPU holds {self.max_devices}"
            )
        pairs = [(i.gi, i.ci) for i in self.instances]
        if len(set(pairs)) != len(pairs):
            raise ValueError("instances: a (gi, ci) pair appears twice")
        return self


class Device(_Model):
    """One GPU as NVML reports it (fields left out come from the profile's `defaults`)."""

    uuid: str = Field(pattern=r"^GPU-[0-9a-fA-F-]+$")
    name: str
    memory_mib: int = Field(ge=1)
    reserved_mib: int = Field(default=0, ge=0)
    pci_bus_id: BusId
    pci_device_id: int = Field(default=0x20B210DE, ge=0, lt=1 << 32)
    pci_subsystem_id: int = Field(default=0x147F10DE, ge=0, lt=1 << 32)
    minor: int = Field(ge=0, lt=255)
    numa_node: int | None = Field(default=None, ge=0)
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    cpu_affinity: str = ""
    nvlinks: int = Field(default=0, ge=0, le=NVLINK_MAX_LINKS, description="NVLinks this GPU has")
    mig_capable: bool = False
    mig: Mig = Mig()
    events: tuple[str, ...] = ("single_bit_ecc", "double_bit_ecc", "pstate", "xid", "clock")

    @field_validator("pci_bus_id")
    @classmethod
    def _norm_bus(cls, value: str) -> str:
        return _bus_id(value)

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
        return value

    @field_validator("cpu_affinity")
    @classmethod
    def _cpus(cls, value: str) -> str:
        cpu_words(value)
        return value

    @model_validator(mode="after")
    def _mig_needs_capable(self) -> Device:
        if (self.mig.current or self.mig.pending) and not self.mig_capable:
            raise ValueError("mig: MIG mode on a GPU with mig_capable: false")
        return self

    @property
    def event_mask(self) -> int:
        mask = 0
        for name in self.events:
            mask |= EVENT_TYPES[name]
        return mask

    @property
    def cc(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


class NvlinkPair(_Model):
    """Direct NVLinks between two GPUs (by index)."""

    gpus: tuple[int, int]
    links: int = Field(ge=1, le=NVLINK_MAX_LINKS)


class NvSwitch(_Model):
    """An NVSwitch: every GPU listed (default all) has `links_per_gpu` links to it."""

    pci_bus_id: BusId
    links_per_gpu: int = Field(ge=1, le=NVLINK_MAX_LINKS)
    gpus: tuple[int, ...] | None = None

    @field_validator("pci_bus_id")
    @classmethod
    def _norm_bus(cls, value: str) -> str:
        return _bus_id(value)


class PcieGroup(_Model):
    """Every pair among `gpus` has this common PCIe ancestor."""

    gpus: tuple[int, ...] = Field(min_length=2)
    level: Literal["internal", "single", "multiple", "hostbridge", "node", "system"]


class System(_Model):
    driver: str = "550.54.15"
    cuda: str = Field(default="12.4", pattern=r"^\d+\.\d+$")
    nvml: str = "12.550.54.15"

    @property
    def cuda_int(self) -> int:
        major, minor = self.cuda.split(".")
        return int(major) * 1000 + int(minor) * 10


class Link(_Model):
    """One NVLink of one GPU after expansion: where it leads."""

    remote_bus_id: str
    remote_pci_device_id: int
    remote_type: RemoteType
    remote_gpu: int | None  # index, when a GPU


class Profile(_Model):
    """A whole fake node."""

    description: str = ""
    system: System = System()
    devices: tuple[Device, ...] = Field(min_length=0, max_length=MAX_GPUS)
    nvlink_pairs: tuple[NvlinkPair, ...] = ()
    nvswitches: tuple[NvSwitch, ...] = ()
    pcie: tuple[PcieGroup, ...] = ()
    mig_profiles: tuple[MigProfile, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        n = len(self.devices)
        for key, values in (
            ("uuid", [d.uuid for d in self.devices]),
            ("minor", [d.minor for d in self.devices]),
            ("pci_bus_id", [d.pci_bus_id for d in self.devices]),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"devices: two devices share a {key}")
        for where, indexes in (
            *((f"nvlink_pairs[{i}].gpus", p.gpus) for i, p in enumerate(self.nvlink_pairs)),
            *((f"nvswitches[{i}].gpus", s.gpus or ()) for i, s in enumerate(self.nvswitches)),
            *((f"pcie[{i}].gpus", g.gpus) for i, g in enumerate(self.pcie)),
        ):
            bad = [g for g in indexes if not 0 <= g < n]
            if bad:
                raise ValueError(f"{where}: no GPU with index {bad[0]} (the profile has {n})")
        for i, pair in enumerate(self.nvlink_pairs):
            if pair.gpus[0] == pair.gpus[1]:
                raise ValueError(f"nvlink_pairs[{i}].gpus: a GPU cannot link to itself")
        names = {p.name for p in self.mig_profiles}
        if len(names) != len(self.mig_profiles) or len({p.profile for p in self.mig_profiles}) != len(names):
            raise ValueError("mig_profiles: a name or profile index appears twice")
        for d_index, device in enumerate(self.devices):
            for i_index, inst in enumerate(device.mig.instances):
                if inst.profile not in names:
                    raise ValueError(
                        f"devices[{d_index}].mig.instances[{i_index}].profile: {inst.profile!r} "
                        f"is not in mig_profiles ({sorted(names)})"
                    )
        for d_index, links in enumerate(self.links()):
            if len(links) > self.devices[d_index].nvlinks:
                raise ValueError(
                    f"devices[{d_index}].nvlinks: the topology gives it {len(links)} NVLinks, "
                    f"it has {self.devices[d_index].nvlinks}"
                )
        return self

    def profile_named(self, name: str) -> MigProfile:
        return next(p for p in self.mig_profiles if p.name == name)

    def links(self) -> list[list[Link]]:
        """Each GPU's NVLinks in link order: direct pairs first, then switches."""
        out: list[list[Link]] = [[] for _ in self.devices]
        for pair in self.nvlink_pairs:
            for here, there in (pair.gpus, pair.gpus[::-1]):
                far = self.devices[there]
                link = Link(
                    remote_bus_id=far.pci_bus_id,
                    remote_pci_device_id=far.pci_device_id,
                    remote_type=RemoteType.gpu,
                    remote_gpu=there,
                )
                out[here].extend([link] * pair.links)
        for switch in self.nvswitches:
            link = Link(
                remote_bus_id=switch.pci_bus_id,
                remote_pci_device_id=NVSWITCH_PCI_DEVICE_ID,
                remote_type=RemoteType.switch,
                remote_gpu=None,
            )
            for gpu in switch.gpus if switch.gpus is not None else range(len(self.devices)):
                out[gpu].extend([link] * switch.links_per_gpu)
        return out

    def level(self, a: int, b: int) -> Level:
        """The common PCIe ancestor of GPUs a and b: as listed, else by NUMA node."""
        if a == b:
            return Level.internal
        # A pair in several groups (a PCIe switch inside a host bridge) takes the closest.
        listed = [Level[g.level] for g in self.pcie if a in g.gpus and b in g.gpus]
        if listed:
            return min(listed)
        na, nb = self.devices[a].numa_node, self.devices[b].numa_node
        return Level.node if na is not None and na == nb else Level.system

    def mig_uuid(self, gpu: int, instance: MigInstance) -> str:
        """The instance's UUID: as given, else derived from its GPU's UUID (stable across runs)."""
        if instance.uuid:
            return instance.uuid
        key = f"{self.devices[gpu].uuid}/gi{instance.gi}/ci{instance.ci}"
        return f"MIG-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, key)}"


def _merge_defaults(raw: Any) -> Any:
    # `defaults` saves repeating what all GPUs of a node share; a device's own keys win.
    if not isinstance(raw, dict) or "defaults" not in raw:
        return raw
    raw = dict(raw)
    defaults = raw.pop("defaults") or {}
    if not isinstance(defaults, dict):
        raise ProfileError("defaults: must be a mapping of device fields")
    devices = raw.get("devices") or []
    if isinstance(devices, list):
        raw["devices"] = [{**defaults, **d} if isinstance(d, dict) else d for d in devices]
    return raw


def _where(error: ErrorDetails) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error["loc"]).replace(".[", "[")


def parse(raw: Any, *, source: str = "<profile>") -> Profile:
    """A profile from already-parsed YAML/JSON data."""
    try:
        return Profile.model_validate(_merge_defaults(raw))
    except ValidationError as err:
        first = err.errors()[0]
        # Checks across fields name their key in the message; field errors get it from loc.
        message = first["msg"].removeprefix("Value error, ")
        where = _where(first)
        raise ProfileError(f"{source}: {where}: {message}" if where else f"{source}: {message}") from None


def load(path: Path | str) -> Profile:
    """Reads a profile: a path, or the name of a shipped one (e.g. "dgx-a100")."""
    file = resolve(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as err:
        raise ProfileError(f"{file}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{file}: not YAML: {err}") from None
    return parse(raw, source=str(file))


def resolve(path: Path | str) -> Path:
    """A profile's file: the path itself, or profiles/<name>.yaml for a shipped name."""
    candidate = Path(path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    shipped = PROFILES_DIR / f"{path}.yaml"
    if shipped.exists():
        return shipped
    raise ProfileError(
        f"{path}: no such file, and no shipped profile of that name ({', '.join(shipped_names())})"
    )


def shipped_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
