"""`serve` and `mps-control` with sharing.mps, in process: the MPS settings they run with, and
every refusal one line, exit 2, naming the key or flag, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_error_line, run

from gpu_device_plugin.cli import mps_control as mps_control_module
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.resources.settings import SharingStrategy

FIXTURES = Path(__file__).parent.parent / "config" / "fixtures" / "nvidia"
FAKE = ("--discovery", "fake", "--fake-devices", "2", "--resource-name", "nvidia.com/gpu")


@pytest.fixture(autouse=True)
def _clean(clean_environment: None) -> None:
    """Every test here starts without the caller's GPU_DP_*/OTEL_* and logging set-up."""


@pytest.fixture
def controlled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """Stands in for the sidecar's loop: records what mps-control would run with."""
    runs: list[tuple[object, ...]] = []

    async def record(settings: object, discovery: object, binary: Path, **_: object) -> None:
        runs.append((settings, discovery, binary))

    monkeypatch.setattr(mps_control_module, "run_mps_control", record)
    return runs


def test_serve_runs_mps_with_the_files_root(served: list[ServeConfig]) -> None:
    result = run("serve", *FAKE, "--config-file", str(FIXTURES / "mps-root.yaml"))

    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.sharing is not None
    assert config.sharing.strategy is SharingStrategy.MPS
    assert str(config.resources.mps_root.path) == "/var/run/mps"


def test_the_flag_wins_over_the_files_mps_root(served: list[ServeConfig], tmp_path: Path) -> None:
    result = run(
        "serve", *FAKE, "--config-file", str(FIXTURES / "mps-root.yaml"), "--mps-root", str(tmp_path)
    )

    assert result.exit_code == 0, result.output
    assert str(served[0].resources.mps_root.path) == str(tmp_path)


def test_mps_control_reads_the_same_file(controlled: list[tuple[object, ...]]) -> None:
    fake = Path(__file__).parents[2] / "hack" / "mpsfake" / "nvidia-cuda-mps-control"
    result = run(
        "mps-control", *FAKE, "--config-file", str(FIXTURES / "mps-root.yaml"), "--mps-control-bin", str(fake)
    )

    assert result.exit_code == 0, result.output
    ((settings, _discovery, binary),) = controlled
    assert binary == fake
    assert str(settings.mps_root.path) == "/var/run/mps"  # type: ignore[attr-defined]
    assert settings.sharing.resources[0].replicas == 10  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["serve", "mps-control"])
@pytest.mark.parametrize(
    ("fixture", "phrase"),
    [
        pytest.param(
            "mps-with-time-slicing.yaml",
            "mps-with-time-slicing.yaml: sharing.mps: cannot be combined with sharing.timeSlicing",
            id="with-time-slicing",
        ),
        pytest.param(
            "mps-with-mig.yaml",
            "mps-with-mig.yaml: sharing.mps: sharing MIG devices with MPS is not supported",
            id="with-mig",
        ),
    ],
)
def test_mps_combined_with_what_it_cannot_share_exits_2_naming_sharing_mps(
    command: str, fixture: str, phrase: str, served: list[ServeConfig], controlled: list[object]
) -> None:
    result = run(command, *FAKE, "--config-file", str(FIXTURES / fixture))

    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, phrase)
    assert served == []
    assert controlled == []


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        pytest.param(
            ("--mps-root", "relative/mps"), "mps-root: relative/mps must be an absolute path", id="root"
        ),
        pytest.param(
            ("--mps-control-bin", "no-such-mps-control"),
            "mps-control-bin: no-such-mps-control is not on PATH",
            id="bin-not-on-path",
        ),
        pytest.param(
            ("--mps-control-bin", "/nonexistent/nvidia-cuda-mps-control"),
            "mps-control-bin: /nonexistent/nvidia-cuda-mps-control does not exist",
            id="bin-path",
        ),
    ],
)
def test_bad_mps_control_flags_exit_2_in_one_line(
    args: tuple[str, ...], phrase: str, controlled: list[object]
) -> None:
    result = run("mps-control", *FAKE, "--config-file", str(FIXTURES / "mps.yaml"), *args)

    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, phrase)
    assert controlled == []


def test_mps_control_env_names_the_binary(controlled: list[tuple[object, ...]], tmp_path: Path) -> None:
    fake = Path(__file__).parents[2] / "hack" / "mpsfake" / "nvidia-cuda-mps-control"
    result = run(
        "mps-control", *FAKE, "--config-file", str(FIXTURES / "mps.yaml"),
        env={"GPU_DP_MPS_CONTROL_BIN": str(fake)},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert controlled[0][2] == fake
