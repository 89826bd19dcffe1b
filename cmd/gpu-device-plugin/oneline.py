"""How the CLI reports a bad value: one line, naming the field by where its value came from.

Click's own report of a usage error is three lines (usage, hint, error) and
names an option's environment variable whatever the source was, so a bad value
in the --config file read as a bad GPU_DP_* variable. Here every error a user
can cause is one line on stderr, `gpu-device-plugin: bad configuration: <where>: <reason>`,
where <where> is the flag's name (from the command line), `name (env GPU_DP_NAME)`
or `<file>: <key>` (from --config). Nothing here decides exit codes; it keeps
click's (2 for usage) and exitcodes.py's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from click.exceptions import NoArgsIsHelpError

PROG = "gpu-device-plugin"
# ctx.meta key: (the --config file, {param name: the key as written in it}).
CONFIG_FILE = "gpu_device_plugin.config_file"


def one_line(text: str) -> str:
    """Whatever a library put in a message, it reaches the terminal as one line."""
    return " ".join(text.split())


def bad_configuration(where: str, reason: str) -> str:
    """The one line for a bad value (without the program's name): where it was set, and why."""
    return one_line(f"bad configuration: {where}: {reason}")


def remember_config_file(ctx: click.Context, path: Path, keys: dict[str, str]) -> None:
    """Note the file the defaults came from; a second one (--config and --config-file) is refused."""
    if CONFIG_FILE in ctx.meta:
        first, _ = ctx.meta[CONFIG_FILE]
        raise click.UsageError(f"--config and --config-file both given ({first}, {path}): give one", ctx)
    ctx.meta[CONFIG_FILE] = (path, keys)


def field_name(ctx: click.Context | None, field: str) -> str:
    """`field`, said the way the user set it: the flag, its environment variable or its file key."""
    if ctx is None:
        return field
    name = field.replace("-", "_")
    param = next((p for p in ctx.command.params if p.name == name), None)
    if param is None:
        # A key path of the file that no flag has (sharing.timeSlicing.resources[0].name),
        # refused once the file met the node: said as the file's key, like its flags' keys.
        if "." in field and CONFIG_FILE in ctx.meta:
            return f"{ctx.meta[CONFIG_FILE][0]}: {field}"
        return field
    source = ctx.get_parameter_source(name)
    if source is ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
        return f"{field} (env {param.envvar})"
    if source is ParameterSource.DEFAULT_MAP and CONFIG_FILE in ctx.meta:
        path, keys = ctx.meta[CONFIG_FILE]
        return f"{path}: {keys.get(name, field)}"
    return field


def describe(err: click.ClickException) -> str:
    """The one line for a click error."""
    ctx = getattr(err, "ctx", None)
    param = err.param if isinstance(err, click.BadParameter) else None
    if param is not None and param.name is not None and not isinstance(err, click.MissingParameter):
        where = field_name(ctx, param.name.replace("_", "-"))
        return bad_configuration(where, one_line(err.message).removesuffix("."))
    message = one_line(err.format_message()).removesuffix(".")
    if isinstance(err, click.UsageError):
        where = ctx.command_path if ctx is not None else PROG
        return f"usage: {message} (see '{where} --help')"
    return message


class ReportedError(click.ClickException):
    """A click error already turned into its one line; shows just that line (exit 1)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"{PROG}: {self.message}", err=True)


class ReportedUsageError(ReportedError):
    """The same for a usage error or a bad value: exit 2, as click has it."""

    exit_code = 2


@contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except (ReportedError, NoArgsIsHelpError):
        raise  # the second: no command given, where click prints the help, which is wanted whole
    except click.ClickException as err:
        cls = ReportedUsageError if err.exit_code == ReportedUsageError.exit_code else ReportedError
        raise cls(describe(err)) from err


class OneLineErrors(click.Group):
    """A group whose usage errors, its own and its commands', are each one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with reported():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with reported():
            return super().invoke(ctx)


class BoundedInt(click.IntRange):
    """An integer within its range ("'x' is not a valid integer", not "integer range")."""

    name = "integer"


class FiniteFloat(click.FloatRange):
    """A float within its range and finite: NaN compares false with every bound and would pass."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
