"""Helpers shared by the CLI tests.

Kept out of conftest.py on purpose: other test folders import the root
conftest by module name, and a second conftest module would shadow it.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner, Result

from gpu_device_plugin.cli.main import main


def nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


# These tests are about a node without a usable GPU: NVML must fail to start.
needs_no_gpu = pytest.mark.skipif(
    nvml_works(), reason="NVML initialises on this machine; the no-GPU behaviour cannot be shown"
)


def environment_without_our_variables() -> dict[str, str]:
    """The caller's environment minus GPU_DP_* and OTEL_*, which would change what is tested."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GPU_DP_", "OTEL_"))}


def one_error_line(stderr: str, *phrases: str) -> str:
    """The single line a refused command wrote to stderr; fails unless it holds every phrase.

    The promise for a bad flag, variable, file or environment: one line, no traceback.
    """
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith("gpu-device-plugin: "), line
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    return line


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI in process, as a user would call it."""
    return CliRunner().invoke(main, list(args), env=env, prog_name="gpu-device-plugin")
