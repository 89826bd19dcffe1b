"""`gpu-device-plugin` in-process (click's CliRunner): flags, env vars, config file, output."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import pytest
from cli_support import needs_no_gpu
from click.testing import CliRunner, Result

from gpu_device_plugin.allocator import AllocateOptions, DeviceIdStrategy, DeviceListStrategy
from gpu_device_plugin.backends.config import DiscoveryKind
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.cli import main as cli_main
from gpu_device_plugin.cli import serve as serve_module
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.main import main
from gpu_device_plugin.cli.main import serve as serve_command
from gpu_device_plugin.cli.render import inventory_json, inventory_table
from gpu_device_plugin.inventory import Device, Health, Inventory, MigMode
from gpu_device_plugin.telemetry.logs import LogFormat


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU_DP_* variable from the caller's shell may leak into a test."""
    for name in list(os.environ):
        if name.startswith("GPU_DP_"):
            monkeypatch.delenv(name)


@pytest.fixture
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # `serve` points the root logger at its stderr; in-process that would outlive
    # CliRunner's captured stream and break pytest's own log capture.
    monkeypatch.setattr(cli_main, "configure_logging", lambda **_: None)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, quiet_logging: None) -> list[ServeConfig]:
    """Stands in for the daemon: records the ServeConfig `serve` would run with."""
    configs: list[ServeConfig] = []

    async def record(config: ServeConfig, *_: object, **__: object) -> None:
        configs.append(config)

    monkeypatch.setattr(serve_module, "serve", record)
    return configs


FAKE = ("--discovery", "fake", "--fake-devices", "1")


# --- serve: refusing bad configuration -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(("--resource-name", "bad"), "resource-name", id="bad-resource-name"),
        pytest.param(("--resource-name", "kubernetes.io/gpu"), "resource-name", id="reserved-resource-name"),
        pytest.param(("--discovery", "fake"), "fake-config", id="fake-with-neither-source"),
        pytest.param(
            ("--discovery", "fake", "--fake-devices", "2", "--fake-config", "gpus.yaml"),
            "fake-config",
            id="fake-with-both-sources",
        ),
        pytest.param(("--discovery", "fake", "--fake-devices", "-3"), "fake-devices", id="negative"),
        pytest.param((*FAKE, "--cdi-kind", "nvidia.com"), "cdi-kind", id="bad-cdi-kind"),
        pytest.param(("--driver-root", "/no/such/driver/root"), "driver-root", id="missing-driver-root"),
        pytest.param(("--driver-root", "run/nvidia/driver"), "driver-root", id="relative-driver-root"),
    ],
)
def test_serve_refuses_bad_configuration_with_exit_2(
    args: tuple[str, ...], named: str, served: list[ServeConfig]
) -> None:
    result = run("serve", *args)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"gpu-device-plugin: bad configuration: {named}: ")
    assert result.stderr.count("\n") == 1
    assert served == []


def test_serve_refuses_a_broken_fake_file_naming_the_field(tmp_path: Path, quiet_logging: None) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices:\n  - uuid: GPU-a\n    health: Sick\n")
    (tmp_path / "dp").mkdir()

    result = run(
        "serve",
        "--discovery",
        "fake",
        "--fake-config",
        str(broken),
        "--device-plugin-dir",
        str(tmp_path / "dp"),
    )

    assert result.exit_code == 2
    assert f"bad configuration: {broken}: devices.0.health: " in result.stderr
    assert list((tmp_path / "dp").iterdir()) == []  # refused before any server started


@pytest.mark.parametrize(("name", "setting"), [("OTEL_METRICS_EXPORTER", "prometheus")])
def test_serve_refuses_a_bad_telemetry_variable_naming_it(
    tmp_path: Path, quiet_logging: None, name: str, setting: str
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", name: setting}
    result = run("serve", *FAKE, "--device-plugin-dir", str(tmp_path / "dp"), env=env)

    assert result.exit_code == 2
    assert f"bad configuration: {name}: '{setting}' is not one of" in result.stderr
    assert not (tmp_path / "dp").exists()


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        pytest.param(("--discovery", "cuda"), "'cuda' is not one of", id="unknown-backend"),
        pytest.param(("--fake-devices", "many"), "'many' is not a valid integer", id="not-a-number"),
        pytest.param(("--device-id-strategy", "name"), "'name' is not one of", id="bad-strategy"),
        pytest.param(("--frobnicate",), "No such option", id="unknown-flag"),
    ],
)
def test_serve_usage_errors_exit_2(args: tuple[str, ...], phrase: str) -> None:
    result = run("serve", *args)
    assert result.exit_code == 2
    assert phrase in result.stderr


@needs_no_gpu
def test_discover_nvml_without_a_gpu_exits_1_with_one_line() -> None:
    result = run("discover", "--discovery", "nvml")
    assert result.exit_code == 1
    assert result.stderr.startswith("gpu-device-plugin: NVML could not be initialised: ")
    assert result.stderr.count("\n") == 1


# --- serve: where each value comes from -----------------------------------------------


def only(served: list[ServeConfig]) -> ServeConfig:
    assert len(served) == 1
    return served[0]


def test_serve_builds_the_config_from_flags(served: list[ServeConfig], tmp_path: Path) -> None:
    result = run(
        "serve",
        "--discovery",
        "fake",
        "--fake-devices",
        "4",
        "--resource-name",
        "nvidia.com/gpu",
        "--device-plugin-dir",
        str(tmp_path),
        "--device-id-strategy",
        "index",
        "--device-list-strategy",
        "cdi-cri",
        "--cdi-kind",
        "example.com/gpu",
        "--pass-device-specs",
        "--no-fail-on-init-error",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    )

    assert result.exit_code == 0, result.output
    config = only(served)
    assert config.discovery.kind is DiscoveryKind.FAKE
    assert config.discovery.fake_devices == 4
    assert config.discovery.fail_on_init_error is False
    assert config.resource_name == "nvidia.com/gpu"
    assert config.device_plugin_dir == tmp_path
    assert config.allocate == AllocateOptions(
        id_strategy=DeviceIdStrategy.INDEX,
        list_strategy=DeviceListStrategy.CDI_CRI,
        pass_device_specs=True,
        cdi_kind="example.com/gpu",
    )
    assert config.log_format is LogFormat.JSON
    assert config.log_level.upper() == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value", "read", "expected"),
    [
        pytest.param(
            "GPU_DP_RESOURCE_NAME",
            "env.example/gpu",
            lambda c: c.resource_name,
            "env.example/gpu",
            id="resource-name",
        ),
        pytest.param(
            "GPU_DP_DEVICE_PLUGIN_DIR",
            "/tmp/env-dp",
            lambda c: c.device_plugin_dir,
            Path("/tmp/env-dp"),
            id="device-plugin-dir",
        ),
        pytest.param("GPU_DP_FAKE_DEVICES", "5", lambda c: c.discovery.fake_devices, 5, id="fake-devices"),
        pytest.param(
            "GPU_DP_FAIL_ON_INIT_ERROR",
            "false",
            lambda c: c.discovery.fail_on_init_error,
            False,
            id="fail-on-init-error",
        ),
        pytest.param(
            "GPU_DP_PASS_DEVICE_SPECS",
            "true",
            lambda c: c.allocate.pass_device_specs,
            True,
            id="pass-device-specs",
        ),
        pytest.param(
            "GPU_DP_DEVICE_ID_STRATEGY",
            "index",
            lambda c: c.allocate.id_strategy,
            DeviceIdStrategy.INDEX,
            id="device-id-strategy",
        ),
        pytest.param(
            "GPU_DP_DEVICE_LIST_STRATEGY",
            "cdi-cri",
            lambda c: c.allocate.list_strategy,
            DeviceListStrategy.CDI_CRI,
            id="device-list-strategy",
        ),
        pytest.param(
            "GPU_DP_CDI_KIND",
            "example.com/dev",
            lambda c: c.allocate.cdi_kind,
            "example.com/dev",
            id="cdi-kind",
        ),
        pytest.param("GPU_DP_LOG_FORMAT", "json", lambda c: c.log_format, LogFormat.JSON, id="log-format"),
    ],
)
def test_every_serve_flag_reads_its_environment_variable(
    variable: str, value: str, read: object, expected: object, served: list[ServeConfig]
) -> None:
    env = {"GPU_DP_DISCOVERY": "fake", "GPU_DP_FAKE_DEVICES": "1", variable: value}

    result = run("serve", env=env)

    assert result.exit_code == 0, result.output
    assert read(only(served)) == expected  # type: ignore[operator]


def test_flag_beats_environment_variable(served: list[ServeConfig]) -> None:
    env = {"GPU_DP_RESOURCE_NAME": "env.example/gpu", "GPU_DP_FAKE_DEVICES": "7"}

    result = run("serve", *FAKE, "--resource-name", "flag.example/gpu", env=env)

    assert result.exit_code == 0, result.output
    config = only(served)
    assert config.resource_name == "flag.example/gpu"
    assert config.discovery.fake_devices == 1


def test_bad_environment_variable_is_refused_naming_the_field(served: list[ServeConfig]) -> None:
    result = run("serve", *FAKE, env={"GPU_DP_RESOURCE_NAME": "bad"})
    assert result.exit_code == 2
    assert "resource-name" in result.stderr


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "plugin.yaml"
    path.write_text(
        "discovery: fake\n"
        "fake-devices: 3\n"
        "resource-name: file.example/gpu\n"
        "device_list_strategy: cdi-cri\n"  # underscores work as well
        "pass-device-specs: true\n"
        "fail-on-init-error: false\n"
    )
    return path


def test_config_file_values_are_used(config_file: Path, served: list[ServeConfig]) -> None:
    result = run("serve", "--config", str(config_file))

    assert result.exit_code == 0, result.output
    config = only(served)
    assert config.discovery.kind is DiscoveryKind.FAKE
    assert config.discovery.fake_devices == 3
    assert config.discovery.fail_on_init_error is False
    assert config.resource_name == "file.example/gpu"
    assert config.allocate.list_strategy is DeviceListStrategy.CDI_CRI
    assert config.allocate.pass_device_specs is True


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        pytest.param({}, (), "file.example/gpu", id="file-alone"),
        pytest.param({"GPU_DP_RESOURCE_NAME": "env.example/gpu"}, (), "env.example/gpu", id="env-beats-file"),
        pytest.param({}, ("--resource-name", "flag.example/gpu"), "flag.example/gpu", id="flag-beats-file"),
        pytest.param(
            {"GPU_DP_RESOURCE_NAME": "env.example/gpu"},
            ("--resource-name", "flag.example/gpu"),
            "flag.example/gpu",
            id="flag-beats-env-and-file",
        ),
    ],
)
def test_config_file_loses_to_env_and_flags(
    env: dict[str, str],
    flags: tuple[str, ...],
    expected: str,
    config_file: Path,
    served: list[ServeConfig],
) -> None:
    # --config after the flag: precedence must not depend on the order on the command line.
    result = run("serve", *flags, "--config", str(config_file), env=env)

    assert result.exit_code == 0, result.output
    assert only(served).resource_name == expected


def test_boolean_env_beats_config_file(config_file: Path, served: list[ServeConfig]) -> None:
    result = run("serve", "--config", str(config_file), env={"GPU_DP_PASS_DEVICE_SPECS": "false"})
    assert result.exit_code == 0, result.output
    assert only(served).allocate.pass_device_specs is False


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        pytest.param("resurce-name: a.b/c\n", "unknown keys resurce-name", id="misspelt-key"),
        pytest.param("- resource-name\n", "must be a mapping", id="not-a-mapping"),
        pytest.param("resource-name: [a\n", "cannot load", id="bad-yaml"),
        pytest.param("resource-name: bad\n", "resource-name", id="bad-value"),
    ],
)
def test_bad_config_file_exits_2(text: str, phrase: str, tmp_path: Path, served: list[ServeConfig]) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(text)

    result = run("serve", "--config", str(path), *FAKE)

    assert result.exit_code == 2
    assert phrase in result.stderr
    assert served == []


def test_missing_config_file_exits_2(tmp_path: Path, served: list[ServeConfig]) -> None:
    result = run("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


SERVE_ENV_VARS = [
    "GPU_DP_DISCOVERY",
    "GPU_DP_FAKE_CONFIG",
    "GPU_DP_FAKE_DEVICES",
    "GPU_DP_FAIL_ON_INIT_ERROR",
    "GPU_DP_RESOURCE_NAME",
    "GPU_DP_DEVICE_PLUGIN_DIR",
    "GPU_DP_DEVICE_ID_STRATEGY",
    "GPU_DP_DEVICE_LIST_STRATEGY",
    "GPU_DP_CDI_KIND",
    "GPU_DP_PASS_DEVICE_SPECS",
    "GPU_DP_LOG_FORMAT",
    "GPU_DP_LOG_LEVEL",
]


def test_serve_help_lists_every_environment_variable() -> None:
    result = run("serve", "--help")

    assert result.exit_code == 0
    options = [p for p in serve_command.params if isinstance(p, click.Option) and p.name != "config"]
    # One variable per flag, named GPU_DP_<FLAG> after its first long name (for a boolean
    # "--x/--no-x" that is GPU_DP_X), and --help shows exactly those, each name whole.
    expected = {"GPU_DP_" + o.opts[0].lstrip("-").replace("-", "_").upper() for o in options}
    assert {o.envvar for o in options} == expected
    shown = re.findall(r"\bGPU_DP_[A-Z_]*", result.stdout)
    assert sorted(shown) == sorted(expected)
    assert set(SERVE_ENV_VARS) <= expected


# --- discover ---------------------------------------------------------------------------


def test_discover_json() -> None:
    result = run("discover", "--discovery", "fake", "--fake-devices", "3", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backend"] == "fake"
    assert report["driver_version"] == "fake-550.0"
    assert report["cuda_version"] == "12.4"
    assert report["control_nodes"] == []
    assert [d["id"] for d in report["devices"]] == [fake_uuid(i) for i in range(3)]
    assert [d["index"] for d in report["devices"]] == [0, 1, 2]
    first = report["devices"][0]
    assert first == {
        "id": fake_uuid(0),
        "index": 0,
        "uuid": fake_uuid(0),
        "model": "NVIDIA H100 80GB HBM3",
        "memory_mib": 81559,
        "minor": 0,
        "pci_bus_id": "0000:10:00.0",
        "numa_node": 0,
        "compute_capability": "9.0",
        "health": "Healthy",
        "health_reason": None,
        "mig_capable": None,
        "mig_mode": None,
        "device_nodes": [],
        "mig_devices": [],
    }
    assert report["dev_root"] == "/dev"


def test_discover_lists_mig_devices_under_their_parent(tmp_path: Path) -> None:
    config = tmp_path / "fake.yaml"
    config.write_text("devices:\n  - mig: [3g.40gb, 1g.10gb]\n  - {}\n")

    table = run("discover", "--fake-config", str(config))
    report = json.loads(run("discover", "--fake-config", str(config), "--json").stdout)

    assert table.exit_code == 0, table.output
    rows = table.stdout.splitlines()
    assert rows[1].startswith("0 ")
    assert rows[2].startswith("0:0  MIG-")
    assert "MIG 3g.40gb (GI 1, CI 0)" in rows[2]
    assert rows[3].startswith("0:1  MIG-")
    assert rows[4].startswith("1 ")
    assert "2 device(s), 2 MIG device(s)" in rows[-1]
    first, second = report["devices"]
    assert [(m["index"], m["profile"], m["memory_mib"]) for m in first["mig_devices"]] == [
        ("0:0", "3g.40gb", 40448),
        ("0:1", "1g.10gb", 9984),
    ]
    assert first["mig_mode"] == {"current": "enabled", "pending": "enabled"}
    assert second["mig_devices"] == []


def test_discover_table() -> None:
    result = run("discover", "--discovery", "fake", "--fake-devices", "3")

    assert result.exit_code == 0, result.output
    header, *rows, summary = result.stdout.splitlines()
    assert header.split() == ["IDX", "UUID", "MODEL", "MEMORY", "PCI", "NUMA", "CC", "MIG", "HEALTH"]
    assert len(rows) == 3
    for index, row in enumerate(rows):
        assert row.startswith(f"{index}  ")
        assert fake_uuid(index) in row
        assert "81559 MiB" in row
        assert row.endswith("Healthy")
        # Columns line up under their headings.
        assert row.index(fake_uuid(index)) == header.index("UUID")
        assert row.index("Healthy") == header.index("HEALTH")
    assert summary == "3 device(s), backend fake, driver fake-550.0, CUDA 12.4"


def test_discover_reads_a_fake_file_and_its_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("devices:\n  - {uuid: GPU-a, health: Unhealthy, numa: 1}\n")

    result = run("discover", "--json", env={"GPU_DP_DISCOVERY": "fake", "GPU_DP_FAKE_CONFIG": str(path)})

    assert result.exit_code == 0, result.output
    (device,) = json.loads(result.stdout)["devices"]
    assert (device["id"], device["health"], device["numa_node"]) == ("GPU-a", "Unhealthy", 1)


def test_discover_broken_fake_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("count: 2\ndevices: []\n")
    result = run("discover", "--discovery", "fake", "--fake-config", str(path))
    assert result.exit_code == 2
    assert f"{path}: devices: " in result.stderr


def test_table_shows_dashes_for_what_is_unknown() -> None:
    inventory = Inventory(
        devices=(Device(id="GPU-x", index=0, uuid="GPU-x", health=Health.UNHEALTHY),),
        backend="nvml",
    )

    _header, row, summary = inventory_table(inventory).splitlines()

    assert row.split() == ["0", "GPU-x", "-", "-", "-", "-", "-", "-", "Unhealthy"]
    assert summary == "1 device(s), backend nvml, driver n/a, CUDA n/a"
    device = inventory_json(inventory)["devices"][0]
    assert (device["numa_node"], device["model"], device["memory_mib"]) == (None, None, None)


def test_a_lost_gpu_shows_its_reason_and_mig_modes_show_in_both_outputs() -> None:
    inventory = Inventory(
        devices=(
            Device(
                id="GPU-a",
                index=0,
                uuid="GPU-a",
                model="NVIDIA A100-SXM4-80GB",
                memory_mib=81920,
                mig_capable=True,
                mig_mode=MigMode(current=True, pending=True),
            ),
            Device(
                id="GPU-b",
                index=1,
                uuid="GPU-b",
                mig_capable=True,
                mig_mode=MigMode(current=False, pending=True),
            ),
            Device(id="GPU-c", index=2, uuid="GPU-c", health=Health.UNHEALTHY, health_reason="GPU is lost"),
            Device(id="GPU-d", index=3, uuid="GPU-d", mig_capable=False),
        ),
        backend="nvml",
    )

    _header, *rows, _summary = inventory_table(inventory).splitlines()

    assert "enabled" in rows[0]
    assert rows[0].endswith("Healthy")
    assert "enable pending" in rows[1]
    assert rows[2].endswith("Unhealthy (GPU is lost)")
    assert "unknown" not in rows[2]
    assert "0 MiB" not in rows[2]
    assert rows[3].split()[-2] == "n/a"
    devices = inventory_json(inventory)["devices"]
    assert devices[0]["mig_mode"] == {"current": "enabled", "pending": "enabled"}
    assert devices[1]["mig_mode"] == {"current": "disabled", "pending": "enabled"}
    assert (devices[2]["health"], devices[2]["health_reason"]) == ("Unhealthy", "GPU is lost")
    assert (devices[3]["mig_capable"], devices[3]["mig_mode"]) == (False, None)


def test_discover_with_a_driver_root_without_nvml_names_the_folders_and_exits_1(tmp_path: Path) -> None:
    result = run("discover", "--driver-root", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"gpu-device-plugin: libnvidia-ml.so.1 not found under the driver root {tmp_path} (searched "
    )
    assert str(tmp_path / "usr/lib64") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_inventory_table_is_header_and_summary() -> None:
    lines = inventory_table(Inventory(devices=(), backend="nvml")).splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("0 device(s)")


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "gpu-device-plugin" in result.stdout
