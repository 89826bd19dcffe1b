"""`serve --config-file`: NVIDIA's file through the real command line, in-process.

What a user notices: the file's values reach the daemon's config unless a flag or
an environment variable says otherwise; a file we cannot honour exits 2 with one
line naming the file and the key, before anything exists; the start-up log says
where each value came from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import environment_without_our_variables, one_error_line, run
from pydantic.alias_generators import to_snake

from gpu_device_plugin.allocator import DeviceIdStrategy, DeviceListStrategy
from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.cli import serve as serve_module
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.main import serve as serve_command
from gpu_device_plugin.nvidia_config import FOLDER_FLAGS, NVIDIA_KEYS, OurFlags
from gpu_device_plugin.resources.settings import SharedResource, Sharing, SharingStrategy

FIXTURES = Path(__file__).parent.parent / "config" / "fixtures" / "nvidia"
FAKE = ("--discovery", "fake", "--fake-devices", "2")


@pytest.fixture(autouse=True)
def _clean(clean_environment: None) -> None:
    """Every test here starts without the caller's GPU_DP_*/OTEL_* and logging set-up."""


@pytest.fixture
def config_lines(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Stands in for the daemon: records the configuration line it would log at start."""
    lines: list[str | None] = []

    async def record(_config: ServeConfig, *_: object, config_line: str | None = None, **__: object) -> None:
        lines.append(config_line)

    monkeypatch.setattr(serve_module, "serve", record)
    return lines


@pytest.fixture
def nvidia_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: v1\n"
        "flags:\n"
        "  failOnInitError: false\n"
        "  plugin:\n"
        "    passDeviceSpecs: true\n"
        "    deviceListStrategy: cdi-cri\n"
        "    deviceIDStrategy: index\n"
        "resources:\n"
        "  gpus:\n"
        "    - pattern: '*'\n"
        "      name: gpu\n"
        "gpuDevicePlugin:\n"
        "  discovery: fake\n"
        "  fakeDevices: 2\n"
    )
    return path


def test_the_file_reaches_the_daemon(nvidia_file: Path, served: list[ServeConfig]) -> None:
    result = run("serve", "--config-file", str(nvidia_file))

    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.resource_name == "nvidia.com/gpu"
    assert config.discovery.fail_on_init_error is False
    assert config.discovery.fake_devices == 2
    assert config.allocate.pass_device_specs is True
    assert config.allocate.list_strategy is DeviceListStrategy.CDI_CRI
    assert config.allocate.id_strategy is DeviceIdStrategy.INDEX


def test_the_environment_variable_names_the_file(nvidia_file: Path, served: list[ServeConfig]) -> None:
    result = run("serve", env={"GPU_DP_CONFIG_FILE": str(nvidia_file)})

    assert result.exit_code == 0, result.output
    assert served[0].resource_name == "nvidia.com/gpu"


@pytest.mark.parametrize(
    ("env", "flags", "name", "fail_on_init_error"),
    [
        pytest.param({}, (), "nvidia.com/gpu", False, id="file"),
        pytest.param(
            {"GPU_DP_RESOURCE_NAME": "env.example/gpu", "GPU_DP_FAIL_ON_INIT_ERROR": "true"},
            (),
            "env.example/gpu",
            True,
            id="env-beats-file",
        ),
        pytest.param(
            {"GPU_DP_RESOURCE_NAME": "env.example/gpu", "GPU_DP_FAIL_ON_INIT_ERROR": "true"},
            ("--resource-name", "flag.example/gpu", "--no-fail-on-init-error"),
            "flag.example/gpu",
            False,
            id="flag-beats-env-and-file",
        ),
    ],
)
def test_flag_beats_env_beats_file(
    env: dict[str, str],
    flags: tuple[str, ...],
    name: str,
    fail_on_init_error: bool,
    nvidia_file: Path,
    served: list[ServeConfig],
) -> None:
    # The file last on the command line: precedence must not depend on the order.
    result = run("serve", *flags, "--config-file", str(nvidia_file), env=env)

    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.resource_name == name
    assert config.discovery.fail_on_init_error is fail_on_init_error


def test_the_effective_config_says_where_each_value_came_from(
    nvidia_file: Path, config_lines: list[str | None]
) -> None:
    result = run(
        "serve", "--config-file", str(nvidia_file), "--log-level", "info", env={"GPU_DP_CDI_KIND": "x/y"}
    )

    assert result.exit_code == 0, result.output
    (line,) = config_lines
    assert line is not None
    assert line.startswith(f"configuration (file: {nvidia_file}): ")
    assert "resource-name=nvidia.com/gpu (file: resources.gpus[0].name)" in line
    assert "fail-on-init-error=False (file: flags.failOnInitError)" in line
    assert "cdi-kind=x/y (env GPU_DP_CDI_KIND)" in line
    assert "log-level=INFO (flag)" in line
    assert "health-checks=all" in line.split("; defaults: ")[1]


@pytest.mark.parametrize(
    ("fixture", "phrase"),
    [
        pytest.param(
            # Our default name is example.com/gpu: the file shares a resource not served here.
            "time-slicing.yaml",
            "time-slicing.yaml: sharing.timeSlicing.resources[0].name: nvidia.com/gpu is not a "
            "resource this plugin serves here (it serves example.com/gpu)",
            id="time-slicing-of-another-name",
        ),
        pytest.param(
            "resources-rename.yaml", "resources-rename.yaml: resources.gpus: only one entry", id="rename"
        ),
    ],
)
def test_a_file_we_cannot_honour_exits_2_before_anything_exists(
    fixture: str, phrase: str, tmp_path: Path
) -> None:
    plugin_dir = tmp_path / "dp"
    plugin_dir.mkdir()

    # The real daemon: nothing stands in for it, so a refusal that came too late would show.
    result = run(
        "serve", *FAKE, "--device-plugin-dir", str(plugin_dir), "--config-file", str(FIXTURES / fixture)
    )

    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, "bad configuration: ", phrase)
    assert list(plugin_dir.iterdir()) == []  # no socket: no server, no registration


def test_a_bad_value_in_the_file_is_named_by_its_key(tmp_path: Path, served: list[ServeConfig]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"flags:\n  nvidiaDriverRoot: {tmp_path / 'absent'}\n")

    result = run("serve", *FAKE, "--config-file", str(path))

    assert result.exit_code == 2
    one_error_line(result.stderr, f"{path}: flags.nvidiaDriverRoot: ", "is not an existing absolute folder")
    assert served == []


def test_a_malformed_file_names_the_key_path(tmp_path: Path, served: list[ServeConfig]) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "sharing:\n  timeSlicing:\n    resources:\n      - name: nvidia.com/gpu\n        replicas: 0\n"
    )

    result = run("serve", *FAKE, "--config-file", str(path))

    assert result.exit_code == 2
    one_error_line(result.stderr, f"{path}: sharing.timeSlicing.resources[0].replicas: must be >= 1")
    assert served == []


@pytest.mark.parametrize("config_first", [True, False], ids=["config-first", "config-file-first"])
def test_both_files_are_refused(
    config_first: bool, nvidia_file: Path, tmp_path: Path, served: list[ServeConfig]
) -> None:
    ours = tmp_path / "ours.yaml"
    ours.write_text("discovery: fake\nfake-devices: 1\n")
    pairs = [("--config", str(ours)), ("--config-file", str(nvidia_file))]
    args = [a for pair in (pairs if config_first else pairs[::-1]) for a in pair]

    result = run("serve", *args)

    assert result.exit_code == 2
    one_error_line(result.stderr, "--config and --config-file both given", "give one")
    assert served == []


def test_every_serve_flag_has_a_key_in_the_file() -> None:
    # A new flag without a key would be the one setting the file cannot make.
    from_nvidia = {to_snake(k) for k in NVIDIA_KEYS}
    flags = {p.name for p in serve_command.params if p.expose_value} - FOLDER_FLAGS

    assert flags == set(OurFlags.model_fields) | from_nvidia
    assert not set(OurFlags.model_fields) & from_nvidia  # one key for one setting


def test_as_a_process_the_refusal_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpu_device_plugin.cli",
            "serve",
            *FAKE,
            "--config-file",
            str(FIXTURES / "mps-with-time-slicing.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment_without_our_variables(),
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == 2
    one_error_line(
        result.stderr,
        "mps-with-time-slicing.yaml: sharing.mps: cannot be combined with sharing.timeSlicing",
    )


def test_keys_without_effect_are_named_in_the_start_line(config_lines: list[str | None]) -> None:
    result = run("serve", *FAKE, "--config-file", str(FIXTURES / "shared-with-gfd.yaml"))

    assert result.exit_code == 0, result.output
    (line,) = config_lines
    assert line is not None
    assert "healthQuietPeriod=" not in line
    assert "health-quiet-period=30.0 (file: gpuDevicePlugin.healthQuietPeriod)" in line
    assert line.endswith(
        "file keys accepted without effect on a device plugin: "
        "flags.useNodeFeatureAPI, flags.gfd, flags.plugin.containerDriverRoot"
    )


def test_the_start_line_says_what_is_shared(config_lines: list[str | None]) -> None:
    path = FIXTURES / "time-slicing.yaml"
    result = run("serve", *FAKE, "--resource-name", "nvidia.com/gpu", "--config-file", str(path))

    assert result.exit_code == 0, result.output
    (line,) = config_lines
    assert line is not None
    assert line.endswith(
        "; sharing time-slicing (file: sharing.timeSlicing): nvidia.com/gpu x10 as nvidia.com/gpu.shared, "
        "one per container"
    )


def test_the_sharing_settings_are_in_the_serve_config(served: list[ServeConfig]) -> None:
    result = run(
        "serve",
        *FAKE,
        "--resource-name",
        "nvidia.com/gpu",
        "--config-file",
        str(FIXTURES / "time-slicing-devices.yaml"),
    )

    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.sharing == Sharing(
        SharingStrategy.TIME_SLICING,
        (SharedResource("nvidia.com/gpu", 4, rename="nvidia.com/gpu-small", devices=("0", "1")),),
        fail_requests_greater_than_one=True,
    )
    assert config.resources.sharing == config.sharing
    assert config.resources.shared_policy is SharedPolicy.PACKED


@pytest.mark.parametrize(
    ("env", "flags", "policy"),
    [
        pytest.param({}, (), SharedPolicy.PACKED, id="file"),
        pytest.param(
            {"GPU_DP_SHARED_DEVICES_ALLOCATION_POLICY": "distributed"}, (), SharedPolicy.DISTRIBUTED, id="env"
        ),
        pytest.param(
            {"GPU_DP_SHARED_DEVICES_ALLOCATION_POLICY": "distributed"},
            ("--shared-devices-allocation-policy", "packed"),
            SharedPolicy.PACKED,
            id="flag",
        ),
    ],
)
def test_the_shared_policy_follows_flag_env_file(
    env: dict[str, str], flags: tuple[str, ...], policy: SharedPolicy, served: list[ServeConfig]
) -> None:
    path = FIXTURES / "time-slicing-devices.yaml"
    result = run(
        "serve", *FAKE, *flags, "--resource-name", "nvidia.com/gpu", "--config-file", str(path), env=env
    )

    assert result.exit_code == 0, result.output
    assert served[0].shared_policy is policy


def test_no_file_no_sharing(served: list[ServeConfig]) -> None:
    result = run("serve", *FAKE)

    assert result.exit_code == 0, result.output
    assert served[0].sharing is None
    assert served[0].shared_policy is SharedPolicy.DISTRIBUTED
