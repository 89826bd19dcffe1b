"""`serve --config-file`: NVIDIA's config file, mapped onto our flags.

The file is read by nvidia_config.py; here each key it sets becomes the click
default of the flag it means, so a flag or an environment variable still wins
over it (flag > env > file > default, as with --config). A key this plugin
cannot honour yet is refused, exit 2, in one line naming the file and the key
and saying why; a key that changes nothing a device plugin does (GPU Feature
Discovery's, CDI spec generation's) is accepted and named once in the start-up
line, which lists every flag's value and where it came from (logged by serve
once the environment checks have passed, so a refusal stays one line). Nothing
here starts anything: it only fills the command's default_map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import click
from click.core import ParameterSource
from pydantic.alias_generators import to_camel

from gpu_device_plugin import nvidia_config
from gpu_device_plugin.cli.oneline import (
    CONFIG_FILE,
    ReportedUsageError,
    bad_configuration,
    remember_config_file,
)
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.nvidia_config import NvidiaConfig, ReplicatedResources
from gpu_device_plugin.resources.names import check_resource_name
from gpu_device_plugin.resources.plan import MPS_WITH_MIG
from gpu_device_plugin.resources.settings import SharedResource, Sharing, SharingStrategy

PLANNED = "is not supported yet (planned: issue 16)"
# What our --device-list-strategy offers, in NVIDIA's words.
LIST_STRATEGIES = ("envvar", "cdi-cri")
# ctx.meta key: the file's keys accepted without effect, named in the start-up log.
IGNORED_KEYS = "gpu_device_plugin.nvidia_file.ignored"
# ctx.meta key: the file's sharing section (a Sharing, or None), which no flag sets.
SHARING = "gpu_device_plugin.nvidia_file.sharing"


@dataclass
class FlagDefaults:
    """What a file sets: click parameter name -> value, and -> the key that set it."""

    values: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    # sharing.timeSlicing: no flag has it, so it reaches ServeConfig by itself.
    sharing: Sharing | None = None

    def set(self, param: str, value: Any, key: str) -> None:
        self.values[param] = value
        self.keys[param] = key


def flag_defaults(config: NvidiaConfig) -> FlagDefaults:
    """Our flags' values from the file; ConfigError(key, reason) for what we cannot do yet."""
    out = FlagDefaults()
    # Before the flags: a combination NVIDIA refuses is named as such, not as one half of it.
    out.sharing = _sharing(config)
    _flags(config, out)
    _resources(config, out)
    if config.imex.channelIDs:
        raise ConfigError("imex.channelIDs", "IMEX channels are not supported")
    _ours(config, out)
    return out


def _flags(config: NvidiaConfig, out: FlagDefaults) -> None:
    flags = config.flags
    if flags.migStrategy is not None:
        out.set("mig_strategy", flags.migStrategy, "flags.migStrategy")
    if flags.failOnInitError is not None:
        out.set("fail_on_init_error", flags.failOnInitError, "flags.failOnInitError")
    if flags.nvidiaDriverRoot is not None:
        out.set("driver_root", flags.nvidiaDriverRoot, "flags.nvidiaDriverRoot")
    driver_root = flags.nvidiaDriverRoot or "/"
    if flags.nvidiaDevRoot not in (None, "", driver_root):
        raise ConfigError(
            "flags.nvidiaDevRoot",
            f"{flags.nvidiaDevRoot} is not supported: the /dev/nvidia* nodes are found under "
            f"flags.nvidiaDriverRoot ({driver_root}); leave it out or make it the same",
        )
    for key, what in (
        ("gdsEnabled", "GPUDirect Storage"),
        ("mofedEnabled", "MOFED"),
        ("gdrcopyEnabled", "GDRCopy"),
    ):
        if getattr(flags, key):
            raise ConfigError(f"flags.{key}", f"true is not supported: {what} devices are not injected")
    if flags.deviceDiscoveryStrategy == "tegra":
        raise ConfigError("flags.deviceDiscoveryStrategy", "tegra is not supported (auto and nvml are)")
    if flags.mpsRoot is not None:
        out.set("mps_root", flags.mpsRoot, "flags.mpsRoot")
    # auto and nvml: what --discovery nvml does; useNodeFeatureAPI: how GFD publishes its labels.
    out.ignored += _present("flags", flags, ("deviceDiscoveryStrategy", "useNodeFeatureAPI"))
    if flags.gfd is not None:
        out.ignored.append("flags.gfd")
    plugin = flags.plugin
    if plugin is None:
        return
    if plugin.passDeviceSpecs is not None:
        out.set("pass_device_specs", plugin.passDeviceSpecs, "flags.plugin.passDeviceSpecs")
    if plugin.deviceIDStrategy is not None:
        out.set("device_id_strategy", plugin.deviceIDStrategy, "flags.plugin.deviceIDStrategy")
    strategies = plugin.device_list_strategies
    unsupported = [s for s in strategies if s not in LIST_STRATEGIES]
    if unsupported or len(strategies) > 1:
        shown = unsupported[0] if unsupported else ", ".join(strategies)
        raise ConfigError(
            "flags.plugin.deviceListStrategy",
            f"{shown} is not supported: one of {' or '.join(LIST_STRATEGIES)}, not several",
        )
    if strategies:
        out.set("device_list_strategy", strategies[0], "flags.plugin.deviceListStrategy")
    policy = plugin.sharedDevicesAllocationPolicy
    if policy == "spread":
        raise ConfigError(
            "flags.plugin.sharedDevicesAllocationPolicy",
            "spread (NVIDIA v0.20.1) is not supported: distributed (which spreads) or packed",
        )
    if policy is not None:
        out.set("shared_devices_allocation_policy", policy, "flags.plugin.sharedDevicesAllocationPolicy")
    if plugin.kubeletSocket is not None:
        socket = PurePosixPath(plugin.kubeletSocket)
        if socket.name != "kubelet.sock":
            raise ConfigError(
                "flags.plugin.kubeletSocket",
                f"{socket} is not supported: the kubelet's socket must be <folder>/kubelet.sock",
            )
        out.set("device_plugin_dir", str(socket.parent), "flags.plugin.kubeletSocket")
    # CDI spec generation (cdiAnnotationPrefix only matters with cdi-annotations, which is
    # refused) and the driver's mount point in NVIDIA's own pod: this plugin reads the
    # driver at flags.nvidiaDriverRoot in its container and generates no CDI spec.
    out.ignored += _present(
        "flags.plugin",
        plugin,
        ("cdiAnnotationPrefix", "nvidiaCTKPath", "containerDriverRoot", "cdiFeatureFlags"),
    )


def _present(prefix: str, section: Any, keys: Iterable[str]) -> list[str]:
    return [f"{prefix}.{k}" for k in keys if getattr(section, k) is not None]


def _resources(config: NvidiaConfig, out: FlagDefaults) -> None:
    gpus = config.resources.gpus
    if config.resources.mig:
        raise ConfigError("resources.mig", f"MIG resources {PLANNED}")
    if not gpus:
        return
    # One name for every GPU is what --resource-name is; per-pattern names need a
    # resource manager per name (planned with MIG and sharing).
    if len(gpus) > 1 or gpus[0].pattern != "*":
        key = "resources.gpus" if len(gpus) > 1 else "resources.gpus[0].pattern"
        raise ConfigError(
            key, f"only one entry with pattern '*' is supported; naming GPUs by pattern {PLANNED}"
        )
    out.set("resource_name", gpus[0].name, "resources.gpus[0].name")


def _sharing(config: NvidiaConfig) -> Sharing | None:
    # renameByDefault and failRequestsGreaterThanOne without resources share nothing.
    mps = config.sharing.mps
    slicing = config.sharing.timeSlicing
    if mps is None or not mps.resources:
        return _replicated(SharingStrategy.TIME_SLICING, slicing)
    if slicing is not None and slicing.resources:
        raise ConfigError(
            "sharing.mps",
            "cannot be combined with sharing.timeSlicing: one sharing strategy at a time "
            "(NVIDIA's plugin refuses both too)",
        )
    if config.flags.migStrategy not in (None, "none"):
        raise ConfigError("sharing.mps", f"{MPS_WITH_MIG} (flags.migStrategy is {config.flags.migStrategy})")
    return _replicated(SharingStrategy.MPS, mps)


def _replicated(strategy: SharingStrategy, section: ReplicatedResources | None) -> Sharing | None:
    """A sharing section as settings; names checked as the kubelet would, errors keyed in the file."""
    if section is None or not section.resources:
        return None
    resources = []
    for position, entry in enumerate(section.resources):
        where = f"{strategy.config_key}.resources[{position}]"
        for key, name in (("name", entry.name), ("rename", entry.rename)):
            if name is not None:
                try:
                    check_resource_name(name)
                except ConfigError as err:
                    raise ConfigError(f"{where}.{key}", err.reason) from err
        resources.append(SharedResource(entry.name, entry.replicas, entry.rename, entry.devices))
    return Sharing(
        strategy,
        tuple(resources),
        rename_by_default=section.renameByDefault,
        # None: NVIDIA's default, off for time-slicing and on for MPS (a client asking for
        # two replicas of one GPU would get one MPS client's limits, not two).
        fail_requests_greater_than_one=(
            strategy is SharingStrategy.MPS
            if section.failRequestsGreaterThanOne is None
            else section.failRequestsGreaterThanOne
        ),
    )


def describe_sharing(sharing: Sharing) -> str:
    """How the start-up line says what is shared: `nvidia.com/gpu x4 as nvidia.com/gpu.shared`."""
    parts = []
    for entry in sharing.resources:
        devices = entry.devices
        which = (
            ""
            if devices == "all"
            else f" (the first {devices})"
            if isinstance(devices, int)
            else f" ({', '.join(devices)})"
        )
        offered = entry.offered_as(sharing.rename_by_default)
        renamed = "" if offered == entry.name else f" as {offered}"
        parts.append(f"{entry.name}{which} x{entry.replicas}{renamed}")
    one = ", one per container" if sharing.fail_requests_greater_than_one else ""
    return f"{sharing.strategy} (file: {sharing.strategy.config_key}): {'; '.join(parts)}{one}"


def _ours(config: NvidiaConfig, out: FlagDefaults) -> None:
    ours = config.ours
    if ours is None:
        return
    for name, value in ours.model_dump(exclude_none=True).items():
        key = f"{nvidia_config.OUR_SECTION}.{to_camel(name)}"
        if name in out.values:
            raise ConfigError(key, f"is also set by {out.keys[name]}: give one")
        if name == "health_ignore_xids" and isinstance(value, list):
            value = ",".join(str(x) for x in value)
        out.set(name, value, key)


def load_config_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """Callback of `serve --config-file`: the file's values become the flags' defaults."""
    if value is None:
        return None
    try:
        defaults = flag_defaults(nvidia_config.load(value))
    except ConfigError as err:
        where = f"{value}: {err.field}" if err.field else str(value)
        raise ReportedUsageError(bad_configuration(where, err.reason)) from err
    # Refuses a second file (--config as well): which one wins would need a rule nobody
    # would guess.
    remember_config_file(ctx, value, defaults.keys)
    ctx.default_map = {**(ctx.default_map or {}), **defaults.values}
    ctx.meta[IGNORED_KEYS] = defaults.ignored
    ctx.meta[SHARING] = defaults.sharing
    return value


def file_sharing() -> Sharing | None:
    """The sharing the command's --config-file asks for; None: none (or no file, or no command)."""
    ctx = click.get_current_context(silent=True)
    sharing: Sharing | None = None if ctx is None else ctx.meta.get(SHARING)
    return sharing


def effective_config_line(ctx: click.Context, flags: dict[str, Any]) -> str:
    """One line: every serve flag's value and where it came from (flag, env, file or default)."""
    chosen: list[str] = []
    defaults: list[str] = []
    file_keys: dict[str, str] = {}
    path: Path | None = None
    if CONFIG_FILE in ctx.meta:
        path, file_keys = ctx.meta[CONFIG_FILE]
    for param in ctx.command.params:
        name = param.name
        if name is None or name not in flags:
            continue
        shown = f"{name.replace('_', '-')}={flags[name]}"
        source = ctx.get_parameter_source(name)
        if source is ParameterSource.COMMANDLINE:
            chosen.append(f"{shown} (flag)")
        elif source is ParameterSource.ENVIRONMENT:
            chosen.append(f"{shown} (env {param.envvar})")
        elif source is ParameterSource.DEFAULT_MAP:
            chosen.append(f"{shown} (file: {file_keys.get(name, name)})")
        else:
            defaults.append(shown)
    line = f"configuration{f' (file: {path})' if path else ''}: {', '.join(chosen) or 'all defaults'}"
    if chosen and defaults:
        line += f"; defaults: {', '.join(defaults)}"
    sharing = ctx.meta.get(SHARING)
    if sharing is not None:
        line += f"; sharing {describe_sharing(sharing)}"
    ignored = ctx.meta.get(IGNORED_KEYS) or []
    if ignored:
        line += f"; file keys accepted without effect on a device plugin: {', '.join(ignored)}"
    return line


def effective_config(flags: dict[str, Any]) -> str | None:
    """effective_config_line for the command being run; None outside one."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else effective_config_line(ctx, flags)
