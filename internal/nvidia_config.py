"""NVIDIA k8s-device-plugin's `version: v1` config file, as a typed, validated model.

A platform team moving from NVIDIA's plugin brings the file it already has
(`--config-file`, a ConfigMap). This module reads that file exactly as NVIDIA
defines it: the same keys, the same types, the same defaults, plus one section
of our own (`gpuDevicePlugin:`) for what only this plugin has. It says what the
file *means*; what this plugin *does* with it (which keys map to which flag,
which are refused until built) is the CLI's business (cli/nvidia_file.py), and
the sharing and MIG parts will read the same model when they land.

It never touches a device, a flag or a logger, and imports nothing of ours but
errors.py and k8s_names.py (the one check of a resource name's syntax): every
problem is a ConfigError whose field is the key path in the file
(`sharing.timeSlicing.resources[0].replicas`), so the caller can say it in one
line.

Unknown keys are refused. NVIDIA's parser ignores them (Go's encoding/json, not
strict), but every key any current NVIDIA release reads is known here, so an
unknown one is a typo (`failOnInitErorr`) that would otherwise leave a default
in force without a word.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.k8s_names import check_extended_resource_name

VERSION = "v1"
# NVIDIA prefixes a resource name without one.
RESOURCE_PREFIX = "nvidia.com"
# A config file is a few hundred bytes; anything this large is not one.
MAX_FILE_BYTES = 1 << 20

MigStrategy = Literal["none", "single", "mixed"]
DeviceListStrategyName = Literal["envvar", "volume-mounts", "cdi-annotations", "cdi-cri"]

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# What `devices:` may list: a GPU index, a MIG index (<gpu>:<mig>), or a GPU or MIG UUID
# (MIG UUIDs in both forms the driver has used).
_DEVICE_REF = re.compile(rf"^(\d+|\d+:\d+|GPU-{_UUID}|MIG-{_UUID}|MIG-GPU-{_UUID}/\d+/\d+)$")


def resource_name(name: str) -> str:
    """A resource name as NVIDIA reads it: `gpu` means `nvidia.com/gpu`; then the kubelet's rule decides."""
    full = name if name.startswith(RESOURCE_PREFIX + "/") else f"{RESOURCE_PREFIX}/{name}"
    return check_extended_resource_name(full)


ResourceName = Annotated[str, AfterValidator(resource_name)]


class _Section(BaseModel):
    # Strict: `failOnInitError: "true"` is a string, which NVIDIA's parser refuses too.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PluginFlags(_Section):
    """`flags.plugin`: the options only the device plugin reads (not GFD)."""

    passDeviceSpecs: bool | None = None
    deviceListStrategy: DeviceListStrategyName | list[DeviceListStrategyName] | None = None
    """One strategy, or several at once (NVIDIA allows a list)."""
    deviceIDStrategy: Literal["uuid", "index"] | None = None
    cdiAnnotationPrefix: str | None = None
    nvidiaCTKPath: str | None = None
    containerDriverRoot: str | None = None
    kubeletSocket: str | None = None
    cdiFeatureFlags: str | list[str] | None = None
    sharedDevicesAllocationPolicy: Literal["distributed", "packed", "spread"] | None = None
    """v0.20's preferred allocation for replicas and MIG devices (`spread` is v0.20.1's)."""

    @property
    def device_list_strategies(self) -> tuple[str, ...]:
        value = self.deviceListStrategy
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)


class GfdFlags(_Section):
    """`flags.gfd`: GPU Feature Discovery's options; no device plugin reads them."""

    oneshot: bool | None = None
    noTimestamp: bool | None = None
    sleepInterval: str | int | None = None
    outputFile: str | None = None
    machineTypeFile: str | None = None


class Flags(_Section):
    """`flags`: shared by the plugin and GFD; `plugin` and `gfd` hold each one's own."""

    migStrategy: MigStrategy | None = None
    failOnInitError: bool | None = None
    mpsRoot: str | None = None
    nvidiaDriverRoot: str | None = None
    nvidiaDevRoot: str | None = None
    gdrcopyEnabled: bool | None = None
    gdsEnabled: bool | None = None
    mofedEnabled: bool | None = None
    useNodeFeatureAPI: bool | None = None
    deviceDiscoveryStrategy: Literal["auto", "nvml", "tegra"] | None = None
    plugin: PluginFlags | None = None
    gfd: GfdFlags | None = None


class Resource(_Section):
    """One entry of `resources.gpus` or `resources.mig`: devices matching `pattern` go under `name`."""

    pattern: str
    name: ResourceName


class Resources(_Section):
    gpus: list[Resource] = Field(default_factory=list)
    mig: list[Resource] = Field(default_factory=list)


class ReplicatedResource(_Section):
    """One resource shared `replicas` ways (time-slicing or MPS)."""

    name: ResourceName
    rename: ResourceName | None = None
    devices: Any = "all"
    """`all`, a count of devices, or a list of GPU indexes, MIG indexes and UUIDs."""
    replicas: Annotated[int, Field(ge=1)]

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: Any) -> str | int | tuple[str, ...]:
        if isinstance(value, str):
            if value != "all":
                raise ValueError(f"the only word allowed is 'all', got {value!r}")
            return value
        if isinstance(value, bool):  # a bool is an int to Python, not to NVIDIA's parser
            raise ValueError("must be 'all', a count or a list of devices")
        if isinstance(value, int):
            if value <= 0:
                raise ValueError(f"a count of devices must be > 0, got {value}")
            return value
        if isinstance(value, list):
            refs: list[str] = []
            for item in value:
                ref = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
                if not isinstance(ref, str) or not _DEVICE_REF.match(ref):
                    raise ValueError(f"{item!r} is not a GPU index, MIG index (<gpu>:<mig>) or UUID")
                refs.append(ref)
            return tuple(refs)
        raise ValueError("must be 'all', a count or a list of devices")


class ReplicatedResources(_Section):
    """`sharing.timeSlicing` or `sharing.mps`."""

    renameByDefault: bool = False
    failRequestsGreaterThanOne: bool | None = None
    """None: NVIDIA's default, false for time-slicing and true for MPS."""
    resources: list[ReplicatedResource] = Field(default_factory=list)


class Sharing(_Section):
    timeSlicing: ReplicatedResources | None = None
    mps: ReplicatedResources | None = None


class Imex(_Section):
    channelIDs: list[int] = Field(default_factory=list)
    required: bool = False

    @field_validator("channelIDs")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        if value not in ([], [0]):
            raise ValueError(f"must be [] or [0], got {value}")
        return value


class OurFlags(_Section):
    """`gpuDevicePlugin`: this plugin's own flags, which NVIDIA's file has no key for.

    Keys are the flag names in camelCase (`--health-quiet-period`: `healthQuietPeriod`).
    Values are checked by the flags themselves, as if given on the command line.
    The flags NVIDIA's `flags` section already has (failOnInitError, nvidiaDriverRoot,
    plugin.*) are set there, never here: one key for one setting.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, alias_generator=to_camel)

    discovery: str | None = None
    fake_config: str | None = None
    fake_devices: int | None = None
    resource_name: str | None = None
    device_plugin_dir: str | None = None
    cdi_kind: str | None = None
    health_checks: str | None = None
    health_ignore_xids: str | list[int] | None = None
    health_recovery: str | None = None
    health_quiet_period: float | None = None
    health_probe_interval: float | None = None
    log_format: str | None = None
    log_level: str | None = None
    metrics_address: str | None = None
    node_labels: bool | None = None
    node_events: bool | None = None
    label_prefix: str | None = None
    kubeconfig: str | None = None
    node_name: str | None = None
    rediscovery_interval: float | None = None


OUR_SECTION = "gpuDevicePlugin"
# Our flags that choose the file (per-node config): a file cannot choose itself, so none has a key.
FOLDER_FLAGS = frozenset({"config_dir", "node_config_label", "default_config"})
# Our flags that NVIDIA's file already has a key for: set there, never in our section.
NVIDIA_KEYS = {
    "failOnInitError": "flags.failOnInitError",
    "migStrategy": "flags.migStrategy",
    "driverRoot": "flags.nvidiaDriverRoot",
    "passDeviceSpecs": "flags.plugin.passDeviceSpecs",
    "deviceListStrategy": "flags.plugin.deviceListStrategy",
    "deviceIdStrategy": "flags.plugin.deviceIDStrategy",
    "sharedDevicesAllocationPolicy": "flags.plugin.sharedDevicesAllocationPolicy",
    "mpsRoot": "flags.mpsRoot",
}


class NvidiaConfig(_Section):
    """The whole file. Every section may be absent; absent means NVIDIA's default."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    version: Literal["v1"] = "v1"
    flags: Flags = Field(default_factory=Flags)
    resources: Resources = Field(default_factory=Resources)
    sharing: Sharing = Field(default_factory=Sharing)
    imex: Imex = Field(default_factory=Imex)
    ours: OurFlags | None = Field(default=None, alias="gpuDevicePlugin")  # OUR_SECTION


def parse(data: Any) -> NvidiaConfig:
    """The model of already-loaded YAML/JSON data; ConfigError names the first bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"must be a mapping with version: {VERSION}, got {type(data).__name__}")
    if data.get("version") in (None, ""):  # NVIDIA: an empty version means v1
        data = {**data, "version": VERSION}
    try:
        return NvidiaConfig.model_validate(data)
    except ValidationError as err:
        raise _first_error(err) from err


def load(path: Path) -> NvidiaConfig:
    """Read and validate the file at `path` (YAML, or JSON, which is YAML)."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError("", f"cannot read: {err.strerror or err}") from err
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError("", f"is larger than {MAX_FILE_BYTES >> 20} MiB: not a config file")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError("", "is not YAML or JSON: not UTF-8 text") from err
    except yaml.YAMLError as err:
        raise ConfigError("", f"is not YAML or JSON: {_yaml_problem(err)}") from err
    return parse(data)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def key_path(loc: tuple[int | str, ...]) -> str:
    """('sharing', 'timeSlicing', 'resources', 0, 'replicas') -> sharing.timeSlicing.resources[0].replicas"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(err: ValidationError) -> ConfigError:
    errors = err.errors()
    # The deepest location is the most precise: for a list given to `str | list[str]`,
    # the bad item rather than "not a string".
    first = max(errors, key=lambda e: len(e["loc"]))
    # A union (`str | list[str]`) reports one error per branch, each with the branch's
    # type in its location; the key is the location without it.
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and _is_branch(p)))
    reason = _reason(first, loc)
    others = len({tuple(e["loc"][: len(loc)]) for e in errors}) - 1
    if others > 0:
        reason += f" (and {others} more)"
    return ConfigError(key_path(loc), reason)


def _is_branch(part: str) -> bool:
    return part.startswith(("list[", "literal[", "function-")) or part in {"str", "int", "bool", "float"}


def _reason(error: Any, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "is required"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {got!r}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {got!r}"
    if kind == "bool_type":
        return f"must be true or false, got {got!r}"
    if kind in {"int_type", "int_from_float"}:
        return f"must be a whole number, got {got!r}"
    if kind == "float_type":
        return f"must be a number, got {got!r}"
    if kind == "string_type":
        return f"must be a string, got {got!r}"
    if kind in {"list_type", "model_type", "dict_type"}:
        what = "a list" if kind == "list_type" else "a mapping"
        return f"must be {what}, got {type(got).__name__}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    section: type[BaseModel] = NvidiaConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        section = _child_model(section, str(part)) or section
    known = [f.alias or name for name, f in section.model_fields.items()]
    if section is OurFlags:
        if loc[-1] in NVIDIA_KEYS:
            return f"is NVIDIA's setting: set {NVIDIA_KEYS[str(loc[-1])]} instead"
        known = [to_camel(name) for name in OurFlags.model_fields]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known here: {', '.join(sorted(known))}"
    where = "" if section is not NvidiaConfig else f" (this plugin's own keys go under {OUR_SECTION}:)"
    return f"unknown key{hint}{where}"


def _child_model(section: type[BaseModel], key: str) -> type[BaseModel] | None:
    for name, field in section.model_fields.items():
        if key in (name, field.alias, to_camel(name)):
            annotation = field.annotation
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                inner = getattr(candidate, "__args__", (candidate,))
                for model in (candidate, *inner):
                    if isinstance(model, type) and issubclass(model, BaseModel):
                        return model
    return None
