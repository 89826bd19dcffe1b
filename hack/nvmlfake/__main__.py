"""`python -m gdp_hack.nvmlfake`: build the fake, install a driver root, inject faults from a shell.

    python -m gdp_hack.nvmlfake build                           # prints the folder holding libnvidia-ml.so.1
    python -m gdp_hack.nvmlfake install --root /opt/fake-driver --profile dgx1-v100
    python -m gdp_hack.nvmlfake inject --root /opt/fake-driver xid 3 79
    python -m gdp_hack.nvmlfake inject --root /opt/fake-driver heal

Bad input exits 2 with one line naming what is wrong.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gdp_hack.nvmlfake.build import BuildError, build
from gdp_hack.nvmlfake.driver import FakeDriver
from gdp_hack.nvmlfake.profile import MigInstance, ProfileError, shipped_names

F = TypeVar("F", bound=Callable[..., Any])


def _fail(err: Exception) -> None:
    click.echo(f"nvmlfake: {err}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """An NVML fake at the C ABI for the real nvidia-ml-py (see hack/nvmlfake/README.md)."""


@main.command("build")
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    help="cache folder (default ~/.cache/gpu-device-plugin/nvml-fake)",
)
def build_cmd(cache: Path | None) -> None:
    """Compile libnvidia-ml.so.1 (cached by source, header and gcc) and print its folder."""
    try:
        click.echo(build(cache))
    except BuildError as err:
        _fail(err)


@main.command()
@click.option("--root", required=True, type=click.Path(path_type=Path), help="the driver root to lay out")
@click.option("--profile", required=True, help=f"a profile file, or one of: {', '.join(shipped_names())}")
def install(root: Path, profile: str) -> None:
    """Lay out a driver root (library, state, /dev stand-ins, MIG capability files); print its env."""
    try:
        driver = FakeDriver(root, profile)
    except (ProfileError, BuildError) as err:
        _fail(err)
    for key, value in driver.env().items():
        click.echo(f"{key}={value}")


@main.group()
@click.option("--root", required=True, type=click.Path(path_type=Path), help="an installed driver root")
@click.pass_context
def inject(ctx: click.Context, root: Path) -> None:
    """Change what the installed fake answers; processes using it see it within milliseconds."""
    try:
        ctx.obj = FakeDriver.attach(root)
    except ProfileError as err:
        _fail(err)


def _guarded(action: Callable[[], object]) -> None:
    try:
        result = action()
    except (ProfileError, ValueError) as err:
        _fail(err)
    if isinstance(result, int):
        click.echo(f"event sequence number {result}")


@inject.command()
@click.argument("gpu", type=int)
@click.argument("code", type=int)
@click.option("--mig", type=int, help="the MIG device (index on that GPU) it concerns")
@click.pass_obj
def xid(driver: FakeDriver, gpu: int, code: int, mig: int | None) -> None:
    """An XID critical error event with this code."""
    _guarded(lambda: driver.inject_xid(gpu, code, mig=mig))


@inject.command()
@click.argument("gpu", type=int)
@click.pass_obj
def ecc(driver: FakeDriver, gpu: int) -> None:
    """A double-bit ECC error event."""
    _guarded(lambda: driver.inject_ecc(gpu))


@inject.command()
@click.argument("gpu", type=int)
@click.pass_obj
def lose(driver: FakeDriver, gpu: int) -> None:
    """The GPU falls off the bus (GPU_IS_LOST from every call on it)."""
    _guarded(lambda: driver.lose(gpu))


@inject.command()
@click.argument("gpu")
@click.argument("seconds", type=float)
@click.option("--function", "functions", multiple=True, help="C function name (repeat; default all)")
@click.pass_obj
def hang(driver: FakeDriver, gpu: str, seconds: float, functions: tuple[str, ...]) -> None:
    """Calls on GPU (or 'all') block SECONDS each until healed."""
    target = None if gpu == "all" else int(gpu)
    _guarded(lambda: driver.hang(target, seconds, functions or ("*",)))


@inject.command("events-unsupported")
@click.argument("gpu", type=int)
@click.pass_obj
def events_unsupported(driver: FakeDriver, gpu: int) -> None:
    """Event registration on GPU answers NOT_SUPPORTED."""
    _guarded(lambda: driver.events_not_supported(gpu))


@inject.command("fail-init")
@click.argument("code", type=int, default=9)
@click.pass_obj
def fail_init(driver: FakeDriver, code: int) -> None:
    """nvmlInit answers CODE (default 9, DRIVER_NOT_LOADED; 0 clears)."""
    _guarded(lambda: driver.fail_init(code))


@inject.command()
@click.argument("gpu", type=int)
@click.argument("instances", nargs=-1)
@click.option("--off", is_flag=True, help="MIG mode off (no instances)")
@click.pass_obj
def mig(driver: FakeDriver, gpu: int, instances: tuple[str, ...], off: bool) -> None:
    """Replace GPU's MIG layout: INSTANCES as PROFILE:GI[:CI], e.g. 3g.40gb:1 1g.10gb:13."""

    def parsed() -> list[MigInstance]:
        out = []
        for text in instances:
            profile, _, rest = text.partition(":")
            gi, _, ci = rest.partition(":")
            if not gi.isdigit() or (ci and not ci.isdigit()):
                raise ValueError(f"instance {text!r}: expected PROFILE:GI[:CI], e.g. 1g.10gb:7")
            out.append(MigInstance(profile=profile, gi=int(gi), ci=int(ci or 0)))
        return out

    _guarded(lambda: driver.set_mig_layout(gpu, parsed(), current=not off))


@inject.command()
@click.argument("gpu", type=int, required=False)
@click.pass_obj
def heal(driver: FakeDriver, gpu: int | None) -> None:
    """Clear GPU's faults, or all faults (and the init failure) without GPU."""
    _guarded(lambda: driver.heal(gpu))


@inject.command()
@click.pass_obj
def show(driver: FakeDriver) -> None:
    """Print the faults in force (JSON)."""
    click.echo(json.dumps(driver.faults.model_dump(mode="json"), indent=1, sort_keys=True))


if __name__ == "__main__":
    main(prog_name="python -m gdp_hack.nvmlfake")
