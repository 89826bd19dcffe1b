"""The fake backend's YAML schema, and its parsing into an Inventory.

A fake config describes either `count` identical GPUs or an explicit `devices`
list. UUIDs left out are derived from the index, so they are the same on every
start: the kubelet checkpoints allocations by device id.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gpu_device_plugin.backends.fake.mig import check_layout, mig_devices
from gpu_device_plugin.backends.fake.topology import FakeTopology
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory.model import Device, Health, Inventory, MigDevice, MigMode, sorted_devices
from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode

# Fixed namespace so that derived UUIDs never change between releases.
_FAKE_UUID_NAMESPACE = uuid.UUID("6f1d3c52-2b0e-4b59-9a53-0c2f4d7a8e11")
MAX_DEVICE_ID_LENGTH = 63  # the kubelet's limit on device ids
_MARKED_UNHEALTHY = HealthReason("marked Unhealthy in the fake config", ReasonCode.FAKE)
DEFAULT_MODEL = "NVIDIA H100 80GB HBM3"
DEFAULT_MEMORY_MIB = 81559


def fake_uuid(index: int) -> str:
    return f"GPU-{uuid.uuid5(_FAKE_UUID_NAMESPACE, f'fake-gpu-{index}')}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FakeDevice(_Strict):
    uuid: str | None = Field(default=None, min_length=1, max_length=MAX_DEVICE_ID_LENGTH)
    index: int | None = Field(default=None, ge=0)
    model: str | None = None
    memory_mib: int | None = Field(default=None, ge=0)
    numa: int | None = Field(default=None, ge=0)
    minor: int | None = Field(default=None, ge=0)
    pci_bus_id: str | None = None
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    health: Literal["Healthy", "Unhealthy"] = "Healthy"
    device_nodes: tuple[str, ...] = ()
    # An injected driver error: the fake backend's health.py classifies it like a real XID.
    xid: int | None = Field(default=None, ge=0)
    mig_capable: bool | None = None
    # MIG mode on, with these MIG devices (NVIDIA's profile names for the device's product:
    # mig.py); [] is MIG on with none. Absent: MIG off, as before.
    mig: tuple[str, ...] | None = None

    @field_validator("uuid")
    @classmethod
    def _printable_id(cls, value: str | None) -> str | None:
        # ASCII only: str.isalnum() alone would let "GPU-é" through.
        allowed = (c.isascii() and (c.isalnum() or c in "-_.") for c in value or "")
        if not all(allowed):
            raise ValueError("may hold only ASCII letters, digits, '-', '_' and '.'")
        return value


class FakeConfig(_Strict):
    count: int | None = Field(default=None, ge=0, le=1024)
    # validate_default: the shape check below must also run when `devices` is absent.
    devices: tuple[FakeDevice, ...] | None = Field(default=None, validate_default=True)
    # Defaults for every device that does not say otherwise.
    model: str = DEFAULT_MODEL
    memory_mib: int = Field(default=DEFAULT_MEMORY_MIB, ge=0)
    numa_nodes: int = Field(default=1, ge=1, le=64)
    compute_capability: str = Field(default="9.0", pattern=r"^\d+\.\d+$")
    driver_version: str = "fake-550.0"
    cuda_version: str = "12.4"
    control_nodes: tuple[str, ...] = ()
    # MIG capability of every device that does not say; absent: unknown (no label).
    mig_capable: bool | None = None
    # How the devices are linked: a preset and/or explicit pairs (topology.py).
    # Absent: no topology, exactly as before it existed.
    topology: FakeTopology | None = None

    # A field validator rather than a model validator, so that the error is
    # reported at `devices` (a model validator's errors name no field).
    @field_validator("devices")
    @classmethod
    def _one_shape(
        cls, devices: tuple[FakeDevice, ...] | None, info: ValidationInfo
    ) -> tuple[FakeDevice, ...] | None:
        if "count" not in info.data:
            return devices  # `count` itself was invalid; that error is the one to report
        if (info.data["count"] is None) == (devices is None):
            raise ValueError("give exactly one of 'count' or 'devices'")
        if devices is not None:
            # Index first: devices without a uuid derive it from the index, so a
            # repeated index would otherwise be reported as a repeated uuid.
            _require_unique("index", [_index(d, i) for i, d in enumerate(devices)])
            _require_unique("uuid", [fake_id(d, i) for i, d in enumerate(devices)])
        return devices

    @field_validator("topology")
    @classmethod
    def _topology_fits(cls, topology: FakeTopology | None, info: ValidationInfo) -> FakeTopology | None:
        if topology is None or "devices" not in info.data:
            return topology  # nothing to check, or the devices' own error is the one to report
        devices = info.data["devices"]
        if devices is not None:
            topology.check_devices([_index(d, i) for i, d in enumerate(devices)])
        elif info.data.get("count") is not None:
            topology.check_devices(range(info.data["count"]))
        return topology


def _index(device: FakeDevice, position: int) -> int:
    return position if device.index is None else device.index


def fake_id(device: FakeDevice, position: int) -> str:
    return device.uuid or fake_uuid(_index(device, position))


def _require_unique(what: str, values: list[str] | list[int]) -> None:
    counts = Counter[object](values)
    dupes = sorted(str(v) for v, n in counts.items() if n > 1)
    if dupes:
        raise ValueError(f"devices share {what} {', '.join(dupes)}")


def _capability(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def to_inventory(config: FakeConfig) -> Inventory:
    specs = config.devices if config.devices is not None else (FakeDevice(),) * (config.count or 0)
    total = len(specs)

    preset_numa = config.topology.preset_numa(total) if config.topology else {}

    def spread_numa(position: int) -> int:
        index = _index(specs[position], position)
        if index in preset_numa:  # a preset knows its machine's NUMA layout
            return preset_numa[index]
        # Devices that do not name a NUMA node fill the nodes evenly, in order.
        return position * config.numa_nodes // max(total, 1)

    devices = []
    migs: list[MigDevice] = []
    for position, spec in enumerate(specs):
        index = _index(spec, position)
        device_id = fake_id(spec, position)
        devices.append(
            Device(
                id=device_id,
                index=index,
                uuid=device_id,
                model=spec.model or config.model,
                memory_mib=config.memory_mib if spec.memory_mib is None else spec.memory_mib,
                minor=index if spec.minor is None else spec.minor,
                pci_bus_id=spec.pci_bus_id or f"0000:{0x10 + index:02x}:00.0",
                numa_node=spec.numa if spec.numa is not None else spread_numa(position),
                compute_capability=_capability(spec.compute_capability or config.compute_capability),
                health=Health(spec.health),
                health_reason="" if spec.health == "Healthy" else _MARKED_UNHEALTHY,
                device_nodes=spec.device_nodes,
                mig_capable=True
                if spec.mig is not None
                else (config.mig_capable if spec.mig_capable is None else spec.mig_capable),
                mig_mode=MigMode(current=True, pending=True) if spec.mig is not None else None,
            )
        )
        if spec.mig:
            migs += mig_devices(devices[-1], spec.mig)
    parent_index = {d.id: d.index for d in devices}
    return Inventory(
        mig_devices=tuple(sorted(migs, key=lambda m: (parent_index[m.parent_id], m.index))),
        devices=sorted_devices(devices),
        backend="fake",
        driver_version=config.driver_version,
        cuda_version=config.cuda_version,
        control_nodes=config.control_nodes,
        topology=config.topology.build({d.index: (d.uuid, d.numa_node) for d in devices})
        if config.topology
        else None,
    )


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def parse_fake_config(text: str, *, source: str) -> FakeConfig:
    """Parse YAML text; every failure is a ConfigError naming the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(source, f"not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(source, "must be a YAML mapping with 'count' or 'devices'")
    try:
        config = FakeConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"{source}: {_field_path(first['loc'])}", first["msg"]) from err
    check_mig(config, source=source)
    return config


def check_mig(config: FakeConfig, *, source: str) -> None:
    """Each device's `mig` list must be profiles of its product that fit on it; ConfigError naming it."""
    for position, spec in enumerate(config.devices or ()):
        if spec.mig is None:
            continue
        model = spec.model or config.model
        memory = config.memory_mib if spec.memory_mib is None else spec.memory_mib
        why = check_layout(model, memory, spec.mig)
        if why is not None:
            raise ConfigError(f"{source}: devices.{position}.mig", why)


def load_fake_config(path: Path) -> FakeConfig:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError("fake-config", f"cannot read {path}: {err.strerror or err}") from err
    return parse_fake_config(text, source=str(path))
