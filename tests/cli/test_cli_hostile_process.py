"""A hostile environment or configuration, through the real `gpu-device-plugin` process.

One case per class of refusal (folder, metrics port, kubeconfig, numbers,
config file, contradicting backends, no driver, probe on nothing): the exit
code, exactly one line on stderr naming the field and reason, no traceback,
and nothing left behind: no socket, no folder, no registration.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import environment_without_our_variables, needs_no_gpu, one_error_line

from gpu_device_plugin.server.kubelet_standin import StandinKubelet

TIMEOUT = 60  # a cold interpreter on a busy 2-core machine


@pytest.fixture(scope="module")
def command() -> str:
    found = shutil.which("gpu-device-plugin", path=str(Path(sys.executable).parent))
    assert found, "gpu-device-plugin is not installed in this venv (run scripts/bootstrap)"
    return found


@pytest.fixture
def folder() -> Iterator[Path]:
    # Short: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="gdp-hostile-") as name:
        yield Path(name)


def env(**extra: str) -> dict[str, str]:
    return {**environment_without_our_variables(), **extra}


def run(command: str, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command, *args], capture_output=True, text=True, env=env(**variables), timeout=TIMEOUT, check=False
    )


def test_a_missing_plugin_folder_exits_2_and_is_not_created(command: str, folder: Path) -> None:
    absent = folder / "device-plugins"

    result = run(command, "serve", "--fake-devices", "2", "--device-plugin-dir", str(absent))

    assert result.returncode == 2
    one_error_line(result.stderr, f"bad configuration: device-plugin-dir: {absent} does not exist")
    assert not absent.exists()


async def test_a_taken_metrics_port_exits_2_before_registering(command: str, folder: Path) -> None:
    kubelet = StandinKubelet(folder)
    await kubelet.start()
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            address = f"127.0.0.1:{holder.getsockname()[1]}"
            process = await asyncio.create_subprocess_exec(
                *(command, "serve", "--fake-devices", "2", "--device-plugin-dir", str(folder)),
                *("--metrics-address", address),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env(),
            )
            _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        assert process.returncode == 2
        one_error_line(
            stderr.decode(),
            f"bad configuration: metrics-address: cannot listen on {address}: Address already in use",
        )
        assert kubelet.registrations == []
        assert sorted(p.name for p in folder.iterdir()) == ["kubelet.sock"]  # no socket of ours
    finally:
        await kubelet.stop()


@pytest.mark.parametrize("how", ["serve", "report"])
def test_a_kubeconfig_that_is_not_yaml_exits_2(command: str, folder: Path, how: str) -> None:
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text("clusters: [a\n")
    plugin_dir = folder / "dp"
    plugin_dir.mkdir()
    serve = ("serve", "--fake-devices", "2", "--device-plugin-dir", str(plugin_dir), "--node-labels")
    args = (
        (*serve, "--node-name", "n1", "--kubeconfig", str(kubeconfig))
        if how == "serve"
        else ("report", "--kubeconfig", str(kubeconfig))
    )

    result = run(command, *args)

    assert result.returncode == 2
    one_error_line(result.stderr, "bad configuration: kubeconfig: ", str(kubeconfig), "not valid YAML: ")
    assert list(plugin_dir.iterdir()) == []


def test_a_nan_from_the_environment_exits_2(command: str, folder: Path) -> None:
    result = run(
        command,
        "serve",
        "--fake-devices",
        "2",
        "--device-plugin-dir",
        str(folder),
        GPU_DP_HEALTH_PROBE_INTERVAL="nan",
    )

    assert result.returncode == 2
    one_error_line(
        result.stderr,
        "bad configuration: health-probe-interval (env GPU_DP_HEALTH_PROBE_INTERVAL): "
        "'nan' is not a finite number",
    )
    assert list(folder.iterdir()) == []


def test_a_bad_config_file_value_names_the_file_and_key(command: str, folder: Path) -> None:
    config = folder / "plugin.yaml"
    config.write_text(f"device-plugin-dir: {folder}\nfake-devices: lots\n")

    result = run(command, "serve", "--config", str(config))

    assert result.returncode == 2
    line = one_error_line(
        result.stderr, f"bad configuration: {config}: fake-devices: 'lots' is not a valid integer"
    )
    assert "GPU_DP_FAKE_DEVICES" not in line
    assert [p.name for p in folder.iterdir()] == ["plugin.yaml"]


def test_nvml_with_a_fake_option_exits_2(command: str, folder: Path) -> None:
    result = run(
        command, "serve", "--discovery", "nvml", "--fake-devices", "2", "--device-plugin-dir", str(folder)
    )

    assert result.returncode == 2
    one_error_line(result.stderr, "bad configuration: discovery: nvml contradicts --fake-devices")
    assert list(folder.iterdir()) == []


def test_a_fake_option_alone_means_the_fake_backend(command: str) -> None:
    result = run(command, "discover", "--fake-devices", "2")

    assert result.returncode == 0, result.stderr
    assert "2 device(s), backend fake" in result.stdout


@needs_no_gpu
def test_no_driver_exits_1_saying_what_to_check(command: str, folder: Path) -> None:
    result = run(command, "serve", "--discovery", "nvml", "--device-plugin-dir", str(folder))

    assert result.returncode == 1
    one_error_line(
        result.stderr,
        "NVML could not be initialised: NVML Shared Library Not Found: libnvidia-ml.so.1 was not found",
        "is the NVIDIA driver installed on this node?",
        "runtimeClassName: nvidia",
        "--driver-root",
    )
    assert list(folder.iterdir()) == []


def test_probe_where_nothing_serves_exits_1(command: str, folder: Path) -> None:
    path = folder / "example.com-gpu-1-1.sock"

    by_socket = run(command, "probe", "--socket", str(path))
    by_folder = run(command, "probe", "--device-plugin-dir", str(folder))

    assert (by_socket.returncode, by_folder.returncode) == (1, 1)
    one_error_line(by_socket.stderr, f"nothing is serving at {path}: no such file")
    one_error_line(
        by_folder.stderr,
        f"nothing is serving at {folder}: no answering socket for example.com/gpu",
        "example.com-gpu-*.sock",
    )
    assert list(folder.iterdir()) == []


def test_a_usage_error_is_one_line(command: str) -> None:
    result = run(command, "serve", "--frobnicate")

    assert result.returncode == 2
    one_error_line(result.stderr, "usage: No such option '--frobnicate'")
