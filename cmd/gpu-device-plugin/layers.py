"""flag > env > file > default, as a function: the `serve` flags resolved against one config file.

With `--config-file` click does the layering at start (the file fills its
default_map). A per-node config (`--config-dir`) changes the file while the
daemon runs, so the same rule is needed again at runtime: `FlagLayers` keeps
what came from the command line and the environment (which never change), and
`resolve(path)` puts the file's values (nvidia_file.flag_defaults, the same
mapping --config-file uses) and the defaults under them, each converted and
checked by its click parameter's own type. Start-up and every reload go
through `resolve`, so what a file means cannot differ between the two. A bad
value names the file's key and says why (ConfigError), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from gpu_device_plugin import nvidia_config
from gpu_device_plugin.cli.nvidia_file import FlagDefaults, flag_defaults
from gpu_device_plugin.cli.oneline import one_line
from gpu_device_plugin.errors import ConfigError

EXPLICIT = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
# What click hands back for "no value, no default": a sentinel since 8.2, None before.
MISSING: Any = getattr(click.core, "UNSET", None)


@dataclass(frozen=True)
class Resolved:
    flags: dict[str, Any]
    # Where each value came from: "flag", "env GPU_DP_X", "file: <key>" or "default".
    sources: dict[str, str]
    file: FlagDefaults


@dataclass(frozen=True)
class FlagLayers:
    command: click.Command
    explicit: Mapping[str, Any]
    """Values given as flags or environment variables, converted: they win over any file."""
    explicit_sources: Mapping[str, str]

    @classmethod
    def of(cls, ctx: click.Context) -> FlagLayers:
        """The flags and environment variables of the command being run."""
        explicit: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for param in ctx.command.params:
            name = param.name
            if name is None or not param.expose_value or name not in ctx.params:
                continue
            source = ctx.get_parameter_source(name)
            if source in EXPLICIT:
                explicit[name] = ctx.params[name]
                sources[name] = "flag" if source is ParameterSource.COMMANDLINE else f"env {param.envvar}"
        return cls(ctx.command, explicit, sources)

    def resolve(self, path: Path | None) -> Resolved:
        """Every flag's value with `path`'s file (None: no file) between the explicit ones and
        the defaults; ConfigError(<key>, reason) for a key or value the file cannot have."""
        file = flag_defaults(nvidia_config.load(path)) if path is not None else FlagDefaults()
        # Click's own layering below the explicit values: the file as the default_map, then
        # each parameter's default, converted and checked by the parameter itself.
        ctx = click.Context(self.command, info_name=self.command.name, default_map=file.values)
        flags: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for param in self.command.params:
            name = param.name
            if name is None or not param.expose_value:
                continue
            if name in self.explicit:
                flags[name] = self.explicit[name]
                sources[name] = self.explicit_sources[name]
                continue
            value, source = param.consume_value(ctx, {})
            from_file = source is ParameterSource.DEFAULT_MAP
            sources[name] = f"file: {file.keys[name]}" if from_file else "default"
            try:
                value = param.process_value(ctx, value)
            except click.BadParameter as err:
                key = file.keys[name] if from_file else name.replace("_", "-")
                raise ConfigError(key, one_line(err.message).removesuffix(".")) from err
            # No value and no default: what click itself hands the command as None.
            flags[name] = None if value is MISSING else value
        return Resolved(flags, sources, file)


def effective_line(resolved: Resolved, path: Path | None) -> str:
    """One line: every value and its source (as effective_config_line does for --config-file)."""
    chosen = [
        f"{name.replace('_', '-')}={resolved.flags[name]} ({source})"
        for name, source in resolved.sources.items()
        if source != "default"
    ]
    line = f"configuration{f' (file: {path})' if path else ''}: {', '.join(chosen) or 'all defaults'}"
    if resolved.file.ignored:
        line += f"; file keys accepted without effect on a device plugin: {', '.join(resolved.file.ignored)}"
    return line


def file_key_errors(resolved: Resolved, build: Callable[[dict[str, Any]], Any]) -> Any:
    """build(flags), with a ConfigError about a flag the file set renamed to the file's key."""
    try:
        return build(resolved.flags)
    except ConfigError as err:
        name = err.field.replace("-", "_")
        if resolved.sources.get(name, "").startswith("file:"):
            raise ConfigError(resolved.file.keys[name], err.reason) from err
        raise
